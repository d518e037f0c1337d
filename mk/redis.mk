# Redis broker tests: real redis-server processes (single, master + replica +
# 3 Sentinels, a 3-master Cluster) started by the tests on free loopback
# ports. `redis-server --sentinel` runs the Sentinels, and redis-cli (a
# dependency of the package) creates the Cluster, so one package is enough.

.PHONY: install-redis test-redis

## Installs redis-server (with redis-cli) when it is missing.
install-redis:
	@command -v redis-server >/dev/null && command -v redis-cli >/dev/null || \
	  { $(SUDO) apt-get update && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server; }
	@redis-server --version

## Only the Redis broker tests (test-server runs them too, with the rest).
test-redis: install-redis build-all
	$(CARGO) $(call TEST,push-server,redis)

# The push-server test run includes the Redis tests: Redis first.
test-server: install-redis
