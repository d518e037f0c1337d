//go:build tools

// Package tools pins the command that e2e/cluster.sh builds from this module.
package tools

import _ "sigs.k8s.io/prometheus-adapter/cmd/adapter"
