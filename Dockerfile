# The Waybill app image. Every process of docker-compose.yml runs from it with its own
# command and environment (platform/launcher/deployment.py), so it sets no CMD of its own.
FROM python:3.12-slim

# platform/ is a source root, never a package (Python's own `platform` module must stay
# importable). STATIC_ROOT is $WAYBILL_DATA_DIR/static: collected below, served by WhiteNoise.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app/platform:/app \
    WAYBILL_DATA_DIR=/app/var

WORKDIR /app

# Dependencies first (pinned, all wheels), so a code change does not reinstall them.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .

# Production settings keep a manifest of hashed static file names, and refuse to start
# without their addresses and secrets: collectstatic gets placeholders it never connects to.
RUN DJANGO_SETTINGS_MODULE=config.settings.production \
    WAYBILL_SECRET_KEY=collectstatic-only \
    WAYBILL_ALLOWED_HOSTS=localhost \
    WAYBILL_BROKER_URL=amqp://collectstatic@localhost/ \
    WAYBILL_DEFAULT_DATABASE_URL=postgresql://collectstatic@localhost/none \
    WAYBILL_ORDERS_DATABASE_URL=postgresql://collectstatic@localhost/none \
    WAYBILL_INVENTORY_DATABASE_URL=postgresql://collectstatic@localhost/none \
    WAYBILL_READMODELS_DATABASE_URL=postgresql://collectstatic@localhost/none \
    python manage.py collectstatic --no-input --verbosity 0

# Code and static files stay root's: read-only to the app. The one folder it writes is
# where the rabbitmq-definitions service puts the broker's users (a named volume, which
# Docker creates with the owner of the folder it is first mounted on).
RUN useradd --system --uid 10001 --no-create-home --home-dir /nonexistent waybill \
    && install -d -o waybill -g waybill /app/var/rabbitmq
USER waybill
