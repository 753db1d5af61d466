"""Baseline for bench_api: a bare Flask endpoint doing only JSON in, JSON out."""

import secrets

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.post("/api/send")
def send():
    payload = request.get_json()
    return jsonify({"id": secrets.token_hex(8), "status": "queued", "n": len(payload)}), 202


@app.post("/api/send/batch")
def batch():
    payload = request.get_json()
    return jsonify({"ids": [secrets.token_hex(8) for _ in payload["messages"]], "rejected": []}), 202
