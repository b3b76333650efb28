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
ENV DATA_DIR=/data FOSCAM_BASE_PATH=/cameras API_HOST=0.0.0.0
EXPOSE 8000
ENTRYPOINT ["hsi"]
CMD ["up"]
