# taxi-loader image: `docker run taxi-loader load --sink postgres --taxi yellow --month 2021-01`
# Stage 1 builds the wheel; stage 2 installs it with the pinned runtime dependencies, no compilers.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml setup.cfg README.md ./
COPY taxi_loader ./taxi_loader
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # Kestra runs containers in a root-owned working directory: keep downloads somewhere writable.
    TAXI_LOADER_DATA_DIR=/tmp/taxi-loader
COPY requirements.txt /tmp/requirements.txt
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-cache-dir -r /tmp/requirements.txt /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels /tmp/requirements.txt \
    && useradd --create-home --uid 10001 loader
USER 10001
WORKDIR /home/loader
ENTRYPOINT ["taxi-loader"]
CMD ["--help"]
