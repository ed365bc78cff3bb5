# rollbook's image: the package, its runbooks and a Jupyter kernel; no compilers, runs as a non-root user.
# Build (no image can be built on the project's CI machines; tests/unit/test_dockerfile.py checks the rules):
#   docker build -t rollbook:0.1.0 .
# Both stages use the same exact Python release (the tag names the patch version and the Debian release);
# pin it by digest in your registry's mirror: FROM python:3.12.8-slim-bookworm@sha256:<digest>.

# ---- build: wheels of rollbook and every dependency (the full image has gcc for any sdist)
FROM python:3.12.8-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY lib/ lib/
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# ---- final: slim (no compilers), the wheels installed, the runbooks beside them
FROM python:3.12.8-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    ROLLBOOK_RUNBOOKS=/opt/rollbook/runbooks \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links=/wheels rollbook \
 && rm -rf /wheels \
 && groupadd --gid 10001 rollbook \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin rollbook
COPY runbooks/ /opt/rollbook/runbooks/
# a numeric user, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["rollbook"]
CMD ["--help"]
