// etcdput: etcd's side of bench/etcd-compare.py.  N goroutines (--clients,
// the requests in flight) each put a value of --val-size bytes to a random
// key of --key-space through etcd's own Go client (clientv3) over --conns
// gRPC connections, until --duration is over; then one JSON line: puts per
// second, errors, and latency percentiles from every put's time, sorted.
// The same workload as `cairn-bench put --clients N --val-size 256
// --key-space 100000` (etcd's tools/benchmark is not packaged by Debian).
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand"
	"sort"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/clientv3"
)

func main() {
	endpoints := flag.String("endpoints", "127.0.0.1:2379", "etcd client URLs, comma-separated")
	clients := flag.Int("clients", 1, "requests in flight")
	conns := flag.Int("conns", 1, "gRPC connections")
	duration := flag.Duration("duration", 5*time.Second, "run time")
	valSize := flag.Int("val-size", 256, "value bytes")
	keySpace := flag.Int("key-space", 100000, "keys")
	flag.Parse()
	var cs []*clientv3.Client
	for i := 0; i < *conns; i++ {
		c, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(*endpoints, ","), DialTimeout: 5 * time.Second})
		if err != nil {
			panic(err)
		}
		cs = append(cs, c)
	}
	val := strings.Repeat("v", *valSize)
	var mu sync.Mutex
	var all []time.Duration
	errs := 0
	deadline := time.Now().Add(*duration)
	var wg sync.WaitGroup
	start := time.Now()
	for g := 0; g < *clients; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			r := rand.New(rand.NewSource(int64(g)))
			c := cs[g%len(cs)]
			var lat []time.Duration
			e := 0
			for time.Now().Before(deadline) {
				k := fmt.Sprintf("k%08d", r.Intn(*keySpace))
				t0 := time.Now()
				_, err := c.Put(context.Background(), k, val)
				if err != nil {
					e++
					continue
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			all = append(all, lat...)
			errs += e
			mu.Unlock()
		}(g)
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	q := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[int(p*float64(len(all)-1))].Microseconds()) / 1000
	}
	fmt.Printf("{\"ops_per_s\": %.1f, \"ops\": %d, \"errors\": %d, \"p50_ms\": %.3f, \"p99_ms\": %.3f, \"max_ms\": %.3f}\n",
		float64(len(all))/el, len(all), errs, q(0.5), q(0.99), q(1))
}
