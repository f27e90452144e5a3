// cnitool drives a CNI plugin through libcni, the library container runtimes use
// (containerd, CRI-O and podman all call plugins through it). The tests use it to run
// flatbridge exactly as a runtime would: conflist parsing, per-plugin config injection,
// VERSION negotiation, prevResult caching for CHECK and DEL.
//
// Usage: cnitool add|check|del|validate <conflist> <netns> <container-id> <ifname>
// Environment: CNI_PATH (plugin directories), CNI_CACHE_DIR (libcni's result cache),
// CNI_ARGS (passed through as runtime args).
// On success ADD prints the result JSON; a plugin error is printed as its error JSON on
// stdout with exit status 1; any other failure goes to stderr with exit status 2.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

func fail(err error) {
	if cniErr, ok := err.(*types.Error); ok {
		out, _ := json.Marshal(cniErr)
		fmt.Println(string(out))
		os.Exit(1)
	}
	fmt.Fprintln(os.Stderr, err)
	os.Exit(2)
}

func main() {
	if len(os.Args) != 6 {
		fmt.Fprintln(os.Stderr, "usage: cnitool add|check|del|validate <conflist> <netns> <container-id> <ifname>")
		os.Exit(2)
	}
	verb, confPath, netns, containerID, ifname := os.Args[1], os.Args[2], os.Args[3], os.Args[4], os.Args[5]

	list, err := libcni.ConfListFromFile(confPath)
	if err != nil {
		fail(err)
	}
	cni := libcni.NewCNIConfigWithCacheDir(filepath.SplitList(os.Getenv("CNI_PATH")), os.Getenv("CNI_CACHE_DIR"), nil)
	rt := &libcni.RuntimeConf{
		ContainerID: containerID,
		NetNS:       netns,
		IfName:      ifname,
	}
	for _, pair := range strings.Split(os.Getenv("CNI_ARGS"), ";") {
		if kv := strings.SplitN(pair, "=", 2); len(kv) == 2 {
			rt.Args = append(rt.Args, [2]string{kv[0], kv[1]})
		}
	}
	ctx := context.Background()

	switch verb {
	case "add":
		result, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			fail(err)
		}
		if err := result.Print(); err != nil {
			fail(err)
		}
	case "check":
		if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
			fail(err)
		}
	case "del":
		if err := cni.DelNetworkList(ctx, list, rt); err != nil {
			fail(err)
		}
	case "validate":
		caps, err := cni.ValidateNetworkList(ctx, list)
		if err != nil {
			fail(err)
		}
		out, _ := json.Marshal(caps)
		fmt.Println(string(out))
	default:
		fmt.Fprintf(os.Stderr, "unknown verb %q\n", verb)
		os.Exit(2)
	}
}
