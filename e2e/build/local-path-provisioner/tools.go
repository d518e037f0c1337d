//go:build tools

// Package tools pins the command that e2e/cluster.sh builds from this module.
package tools

import _ "github.com/rancher/local-path-provisioner"
