# One image for every Wattline service; docker-compose picks the sub-command.
# Every package of pyproject.toml is copied (tests/test_architecture.py holds this file to it).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
# Pango and a font for WeasyPrint (the monthly PDF reports).
RUN apt-get update && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 \
        fonts-dejavu-core && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY wattline ./wattline
COPY analytics ./analytics
COPY sensor_sim ./sensor_sim
COPY ingest ./ingest
COPY alerts ./alerts
COPY exports ./exports
COPY api ./api
COPY dashboard ./dashboard
COPY launcher ./launcher
COPY sql ./sql
COPY scripts ./scripts
RUN pip install -e .
RUN useradd --create-home wattline && mkdir -p /app/.wattline/spool && chown -R wattline /app/.wattline
USER wattline
ENTRYPOINT ["wattline"]
