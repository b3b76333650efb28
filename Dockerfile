# The HSI image. compose.yml runs one `hsi` subcommand per service (`hsi watch`, `hsi worker
# --stage detect`, `hsi api`, …); on its own it runs everything in one process (`hsi up`).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY hsi ./hsi
COPY streams ./streams
COPY projections ./projections
COPY migrations ./migrations
RUN pip install --no-cache-dir . && useradd --system --uid 10001 hsi && mkdir -p /data /cameras \
    && chown hsi /data /cameras
USER hsi
ENV DATA_DIR=/data FOSCAM_BASE_PATH=/cameras API_HOST=0.0.0.0 PYTHONUNBUFFERED=1
# the API; the FTP receiver's control port (its passive ports: FTP_PASSIVE_PORTS)
EXPOSE 8000 2121
# Signals reach HSI directly (no init process): it stops gracefully on SIGTERM.
ENTRYPOINT ["hsi"]
CMD ["up"]
