// etcdput: etcd's side of bench/etcd-compare.py, through etcd's own Go
// client (clientv3); etcd's tools/benchmark is not packaged by Debian.
//
// put (the default): --clients goroutines, the requests in flight, each put a
// value of --val-size bytes to a random key of --key-space over --conns gRPC
// connections until --duration is over.  As `cairn-bench put --clients N
// --val-size 256 --key-space 100000`.
//
// watch (--watchers W): W watches on the key prefix, those of one connection
// on one gRPC stream, and the same writer, whose values start with their send
// time.  Counts the events delivered per second and the delay from put to
// event, as `cairn-bench watch --watchers W --clients N --shared-polls`.
//
// Prints one JSON line: per second, errors, and percentiles (ms) of every
// put's latency or every event's delay, sorted.
package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/clientv3"
)

const prefix = "k"

func quantiles(all []time.Duration) func(float64) float64 {
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	return func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[int(p*float64(len(all)-1))].Microseconds()) / 1000
	}
}

// write runs the writer until the deadline: puts acknowledged, their latencies, errors.
func write(cs []*clientv3.Client, clients, valSize, keySpace int, deadline time.Time) (int64, []time.Duration, int) {
	var mu sync.Mutex
	var all []time.Duration
	errs := 0
	var wg sync.WaitGroup
	for g := 0; g < clients; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			r := rand.New(rand.NewSource(int64(g)))
			c := cs[g%len(cs)]
			val := make([]byte, valSize)
			for i := range val {
				val[i] = 'v'
			}
			var lat []time.Duration
			e := 0
			for time.Now().Before(deadline) {
				k := fmt.Sprintf("%s%08d", prefix, r.Intn(keySpace))
				t0 := time.Now()
				if valSize >= 8 {
					binary.LittleEndian.PutUint64(val, uint64(t0.UnixNano()))
				}
				if _, err := c.Put(context.Background(), k, string(val)); err != nil {
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
	return int64(len(all)), all, errs
}

func main() {
	endpoints := flag.String("endpoints", "127.0.0.1:2379", "etcd client URLs, comma-separated")
	clients := flag.Int("clients", 1, "requests in flight")
	conns := flag.Int("conns", 1, "gRPC connections")
	duration := flag.Duration("duration", 5*time.Second, "run time")
	valSize := flag.Int("val-size", 256, "value bytes")
	keySpace := flag.Int("key-space", 100000, "keys")
	watchers := flag.Int("watchers", 0, "watch mode: watches on the key prefix")
	flag.Parse()
	var cs []*clientv3.Client
	for i := 0; i < *conns; i++ {
		c, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(*endpoints, ","), DialTimeout: 5 * time.Second})
		if err != nil {
			panic(err)
		}
		cs = append(cs, c)
	}
	if *watchers == 0 {
		start := time.Now()
		n, lat, errs := write(cs, *clients, *valSize, *keySpace, start.Add(*duration))
		q := quantiles(lat)
		fmt.Printf("{\"ops_per_s\": %.1f, \"ops\": %d, \"errors\": %d, \"p50_ms\": %.3f, \"p99_ms\": %.3f, \"max_ms\": %.3f}\n",
			float64(n)/time.Since(start).Seconds(), n, errs, q(0.5), q(0.99), q(1))
		return
	}
	// Each watch on its own context, all with the same metadata: clientv3 keys its
	// streams by that metadata, so the watches of one client share one stream.
	var events, lastNs int64
	var mu sync.Mutex
	var delays []time.Duration
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	ready := make(chan struct{}, *watchers)
	for w := 0; w < *watchers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
			defer wcancel()
			ch := cs[w%len(cs)].Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
			var mine []time.Duration
			first := true
			for resp := range ch {
				if first {
					ready <- struct{}{}
					first = false
				}
				now := time.Now()
				for _, ev := range resp.Events {
					if len(ev.Kv.Value) >= 8 {
						sent := int64(binary.LittleEndian.Uint64(ev.Kv.Value))
						mine = append(mine, now.Sub(time.Unix(0, sent)))
					}
				}
				if n := len(resp.Events); n > 0 {
					atomic.AddInt64(&events, int64(n))
					atomic.StoreInt64(&lastNs, now.UnixNano())
				}
			}
			mu.Lock()
			delays = append(delays, mine...)
			mu.Unlock()
		}(w)
	}
	for w := 0; w < *watchers; w++ {
		<-ready
	}
	start := time.Now()
	n, _, errs := write(cs, *clients, *valSize, *keySpace, start.Add(*duration))
	want := n * int64(*watchers)
	for t := time.Now(); atomic.LoadInt64(&events) < want && time.Since(t) < 10*time.Second; {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	got := atomic.LoadInt64(&events)
	el := time.Unix(0, atomic.LoadInt64(&lastNs)).Sub(start).Seconds()
	q := quantiles(delays)
	fmt.Printf("{\"events_per_s\": %.1f, \"events\": %d, \"expected\": %d, \"puts_per_s\": %.1f, \"errors\": %d, "+
		"\"p50_ms\": %.3f, \"p99_ms\": %.3f, \"max_ms\": %.3f}\n",
		float64(got)/el, got, want, float64(n)/(*duration).Seconds(), errs, q(0.5), q(0.99), q(1))
}
