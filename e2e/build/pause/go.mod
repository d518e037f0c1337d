// The pod sandbox ("pause") image's process, for e2e/cluster.sh: no registry
// here serves registry.k8s.io/pause, so the test cluster builds its own.
module push.dev/e2e/pause

go 1.26.0
