"""Another Flask app, served by FitFlix's gunicorn.conf.py: `gunicorn -c gunicorn.conf.py examples.myapp:app`.

gunicorn.conf.py brings the sizing and the recycling (its hooks run around
any app); `fitflix.init_app(app)` brings the rest: /health (Render's
healthCheckPath), /health/live, /health/ready, /health/memory, /metrics,
/openapi.json, JSON errors and the response headers. Without that call the
app still recycles, but /health is a 404 and Render restarts the instance.
"""

from flask import Flask, jsonify

import fitflix

app = Flask(__name__)


@app.get("/api/hello")
def hello():
    return jsonify(message="Hello from my own app")


# Settings: the environment and the .env that gunicorn.conf.py read.
fitflix.init_app(app)
