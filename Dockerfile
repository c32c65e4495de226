# narthex in a container: `docker build -t narthex .` then
#   docker run -p 5557:5557 -v narthex-data:/var/lib/narthex narthex
# The image's config (config/docker.yaml) listens on 0.0.0.0:5557 and keeps its
# data (index, NARs, signing key, audit log) in the /var/lib/narthex volume.
# BASE and BUILD_BASE replace the official node image with another one that has node (and, for
# BUILD_BASE, npm and what node-gyp needs) and a `node` user: scripts/container-smoke.sh builds
# with local ones where no image registry is reachable.
ARG BASE=node:20-bookworm-slim
ARG BUILD_BASE=node:20-bookworm-slim

FROM ${BUILD_BASE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY scripts/bundle.mjs scripts/code-cache.mjs ./scripts/
COPY src ./src
RUN npm run build && npm prune --omit=dev

FROM ${BASE}
# The decoders narthex verifies xz and bzip2 NARs with.
RUN apt-get update \
 && apt-get install -y --no-install-recommends xz-utils bzip2 zstd ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY bin ./bin
COPY config ./config
RUN mkdir -p /var/lib/narthex && chown node:node /var/lib/narthex
USER node
VOLUME /var/lib/narthex
EXPOSE 5557
HEALTHCHECK --interval=30s --timeout=5s CMD node -e "fetch('http://127.0.0.1:5557/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
ENTRYPOINT ["node", "--max-semi-space-size=2", "bin/narthex.js"]
CMD ["serve", "--config", "config/docker.yaml"]
