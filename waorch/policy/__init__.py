"""The anti-ban policy: rules, pacing, bursts, trust levels, recipient protection, opt-outs."""
