# FitFlix backend image, for Kubernetes (deploy/kubernetes/) or any container
# platform. Render builds from render.yaml with its native Python runtime
# instead; this base image carries the same Python (render.yaml PYTHON_VERSION,
# whose comment says why that patch release).
FROM python:3.13.13-slim

# No .pyc writes at run time (the root filesystem is read-only in the
# Deployment; the app is compiled below), and logs leave unbuffered.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first: this layer is rebuilt only when requirements.txt changes.
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

# The app and nothing else (tests, bench and any .env stay out; see .dockerignore).
COPY gunicorn.conf.py wsgi.py ./
COPY fitflix/ ./fitflix/
RUN python -m compileall -q fitflix wsgi.py

# A numeric uid, so Kubernetes' runAsNonRoot can verify it (deployment.yaml
# runs as the same 10001). It owns nothing in /app: the code stays read-only
# to the process that runs it.
RUN groupadd --system --gid 10001 fitflix \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin fitflix
USER 10001:10001

# Render and Heroku set PORT; here the image says which one it listens on.
ENV PORT=8000
EXPOSE 8000

# gunicorn's master is PID 1 and handles the signals itself (SIGTERM: drain,
# then a graceful stop), and it reaps its own workers. Exec form: a shell form
# would put /bin/sh in front of it, and sh does not pass SIGTERM on.
# No flags: they would override gunicorn.conf.py. The Procfile's command exactly.
STOPSIGNAL SIGTERM
CMD ["gunicorn", "-c", "gunicorn.conf.py"]
