# push-bench and the side-by-side comparison with nginx+nchan (included by the Makefile).
.PHONY: bench test-bench

## The standard set against nchan (memory, Redis) and Push (memory, Redis), written into
## docs/benchmarks.md. Installs nginx, libnginx-mod-nchan and redis-server when missing.
## Options: BENCH_SERVERS, BENCH_TRANSPORTS, BENCH_SCENARIOS, BENCH_DURATION (see bench/run.sh).
bench:
	bash bench/run.sh

## push-bench unit tests plus a tiny run of every scenario against nchan and a debug push-server.
test-bench: build-all
	$(CARGO) $(call TEST,push-bench)
	CARGO="$(CARGO)" bash bench/smoke.sh
