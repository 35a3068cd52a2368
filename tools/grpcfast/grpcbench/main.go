// grpcbench: N sequential unary gRPC calls over a unix socket; prints per-call latencies' p50/p90 in µs.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"sort"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

type raw struct{}

func (raw) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (raw) Unmarshal(b []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), b...)
	return nil
}
func (raw) Name() string { return "proto" }

func main() {
	addr := flag.String("a", "", "socket")
	method := flag.String("m", "/containerd.services.version.v1.Version/Version", "method")
	n := flag.Int("n", 1000, "calls")
	ns := flag.String("ns", "default", "namespace")
	flag.Parse()
	conn, err := grpc.NewClient("passthrough:///x",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", *addr)
		}),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(raw{})))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer conn.Close()
	ctx := metadata.AppendToOutgoingContext(context.Background(), "containerd-namespace", *ns)
	lat := make([]float64, 0, *n)
	for i := 0; i < *n+50; i++ {
		req := []byte{}
		var resp []byte
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		t0 := time.Now()
		err := conn.Invoke(cctx, *method, &req, &resp)
		d := time.Since(t0)
		cancel()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if i >= 50 {
			lat = append(lat, float64(d.Microseconds()))
		}
	}
	sort.Float64s(lat)
	fmt.Printf("%.0f %.0f\n", lat[len(lat)/2], lat[len(lat)*9/10])
}
