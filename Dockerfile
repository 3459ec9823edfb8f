# One image for every dialer process (migrate, worker, beat, listener, pbx-sim).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY dialer ./dialer
COPY migrations ./migrations
RUN pip install --no-cache-dir -e . && useradd --system --uid 10001 dialer
USER dialer
ENTRYPOINT ["dialer"]
CMD ["--help"]
