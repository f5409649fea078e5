// Command etcd builds the etcd server for the test bed; `go install` of etcd fails on its
// replace directives, so this wrapper calls its entry point instead.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
