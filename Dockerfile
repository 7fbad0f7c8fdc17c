# Norc's daemons in a container: `docker build -t norc .`, then
#   docker run --init -e NORC_DATABASE_URL=postgresql://... norc executor -c 4
# (compose.yaml runs PostgreSQL, a scheduler, an executor and the web page together;
# docs/deploy.md explains the choices).
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The core with its PostgreSQL driver and CommandTask (norc-command); add norc_sqs and
# norc_s3 here for SQS queues and S3 logs.
COPY pyproject.toml README.md /src/
COPY norc /src/norc
COPY norc_command /src/norc_command
RUN pip install "/src[postgresql]" /src/norc_command && rm -rf /src

# A user of its own: tasks run as it. /var/lib/norc/logs exists in the image so that a
# named volume mounted there starts owned by that user.
RUN useradd --system --home-dir /var/lib/norc --shell /usr/sbin/nologin norc \
    && mkdir -p /var/lib/norc/logs \
    && chown -R norc:norc /var/lib/norc
USER norc
WORKDIR /var/lib/norc
ENV NORC_LOG_DIR=/var/lib/norc/logs

# SIGTERM is the graceful stop (running instances finish, for at most --stop-timeout);
# give `docker stop` more time than that (`--time`, compose's stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["norc"]
CMD ["executor"]
