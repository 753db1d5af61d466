"""`waorch run`: every waorch process on one machine, with embedded defaults."""
