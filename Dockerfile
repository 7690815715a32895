# One image for every Nakhon service: `nakhon gateway`, `nakhon processor`,
# `nakhon api`, `nakhon maintain`, `nakhon migrate`, `nakhon simulate`.
# docker-compose.yml picks the command; configuration is NAKHON_* variables.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY nakhon ./nakhon
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels nakhon \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --no-create-home nakhon
USER nakhon
# gateway metrics, processor metrics, API
EXPOSE 9101 9102 8080
ENTRYPOINT ["nakhon"]
CMD ["--help"]
