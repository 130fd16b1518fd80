// A seed 001 publisher for eddy's NATS tests: seed 001's Event struct, unchanged, serialised with
// encoding/json and published to a JetStream stream with nats.go, as the event bus would after
// moving from NATS Streaming (end of life) to JetStream.
//
//	go-nats-publisher -url nats://127.0.0.1:4222 -stream EVENTS -count 20000 -out published.jsonl
//
// Subjects follow seed 001's `domain.event` naming: user.created, order.placed, and the versioned
// user.created.v1 / user.created.v2 (version 2 renames user_id to uid inside data). Timestamps come
// from time.Now(), shifted back by -age and spread over -span, written in several zones. With
// -malformed N, N events carry a data string that is not a JSON object. With -closing, every
// subject gets one last event -close-after past the others, so every window closes.
// Each published message is written to -out as a JSON line {subject, seq, payload}.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"math/rand"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Event is seed 001's event, unchanged.
type Event struct {
	ID        string    `json:"id"`
	Type      string    `json:"type"`
	Data      string    `json:"data"`
	Timestamp time.Time `json:"timestamp"`
}

type published struct {
	Subject string `json:"subject"`
	Seq     uint64 `json:"seq"`
	Payload string `json:"payload"`
}

var subjects = []string{"user.created", "order.placed", "user.created.v1", "user.created.v2"}

func main() {
	url := flag.String("url", nats.DefaultURL, "NATS server URL")
	stream := flag.String("stream", "EVENTS", "JetStream stream (created with subjects user.> and order.> when missing)")
	count := flag.Int("count", 1000, "events to publish")
	seed := flag.Int64("seed", 1, "random seed")
	users := flag.Int("users", 500, "distinct users")
	age := flag.Duration("age", 2*time.Hour, "how far before now the first event is")
	span := flag.Duration("span", 10*time.Minute, "event time covered by the events")
	malformed := flag.Int("malformed", 0, "events whose data is not a JSON object")
	closing := flag.Bool("closing", false, "publish one closing event per subject past all others")
	closeAfter := flag.Duration("close-after", 30*time.Minute, "how far past the last event the closing events are")
	idPrefix := flag.String("id-prefix", "ev", "prefix of event ids")
	out := flag.String("out", "", "append what was published here, one JSON line each")
	purge := flag.Bool("purge", false, "purge the stream (remove every message) instead of publishing")
	flag.Parse()

	nc, err := nats.Connect(*url)
	if err != nil {
		log.Fatalf("connect: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		log.Fatalf("jetstream: %v", err)
	}
	ctx := context.Background()
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:      *stream,
		Subjects:  []string{"user.>", "order.>"},
		Retention: jetstream.LimitsPolicy,
		Storage:   jetstream.FileStorage,
	}); err != nil {
		log.Fatalf("stream: %v", err)
	}
	if *purge {
		s, err := js.Stream(ctx, *stream)
		if err != nil {
			log.Fatalf("stream: %v", err)
		}
		if err := s.Purge(ctx); err != nil {
			log.Fatalf("purge: %v", err)
		}
		return
	}
	var w *bufio.Writer
	if *out != "" {
		f, err := os.OpenFile(*out, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			log.Fatalf("out: %v", err)
		}
		defer f.Close()
		w = bufio.NewWriter(f)
		defer w.Flush()
	}
	zones := []*time.Location{time.UTC, time.FixedZone("", 3*3600), time.FixedZone("", -5*3600), time.FixedZone("", 5*3600+1800)}
	rng := rand.New(rand.NewSource(*seed))
	start := time.Now().Add(-*age)
	publish := func(subject string, ev Event) {
		body, err := json.Marshal(ev)
		if err != nil {
			log.Fatalf("marshal: %v", err)
		}
		ack, err := js.Publish(ctx, subject, body, jetstream.WithMsgID(ev.ID))
		if err != nil {
			log.Fatalf("publish: %v", err)
		}
		if w != nil {
			line, _ := json.Marshal(published{Subject: subject, Seq: ack.Sequence, Payload: string(body)})
			w.Write(line)
			w.WriteString("\n")
		}
	}
	bad := map[int]bool{}
	for len(bad) < *malformed && len(bad) < *count {
		bad[rng.Intn(*count)] = true
	}
	var last time.Time
	for i := 0; i < *count; i++ {
		subject := subjects[rng.Intn(len(subjects))]
		user := fmt.Sprintf("user-%d", rng.Intn(*users))
		at := start.Add(time.Duration(int64(*span) * int64(i) / int64(*count)))
		last = at
		ev := Event{ID: fmt.Sprintf("%s-%d", *idPrefix, i), Timestamp: at.In(zones[i%len(zones)])}
		switch subject {
		case "order.placed":
			ev.Type = "order.placed"
			ev.Data = fmt.Sprintf(`{"order_id":"o-%d","user_id":%q,"amount":%d.%02d}`, i, user, rng.Intn(200), rng.Intn(100))
		case "user.created.v2":
			ev.Type = "user.created"
			ev.Data = fmt.Sprintf(`{"uid": %q, "username": "n<%d>&"}`, user, i)
		default:
			ev.Type = "user.created"
			ev.Data = fmt.Sprintf(`{"user_id": %q, "username": "name \"%d\""}`, user, i)
		}
		if bad[i] {
			ev.Data = []string{"not json", `["a","list"]`, `{"user_id": "unterminated`}[i%3]
		}
		publish(subject, ev)
	}
	if *closing {
		for i, subject := range subjects {
			ev := Event{
				ID:        fmt.Sprintf("%s-closing-%d", *idPrefix, i),
				Type:      "closing",
				Data:      `{"user_id": "closing"}`,
				Timestamp: last.Add(*closeAfter),
			}
			if subject == "user.created.v2" {
				ev.Data = `{"uid": "closing"}`
			}
			publish(subject, ev)
		}
	}
}
