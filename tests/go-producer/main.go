// Produces the seed services' events exactly as they do: their Go structs, encoding/json, and a
// segmentio/kafka-go Writer with the LeastBytes balancer (seed 000's NewProducer). eddy's broker
// tests run it, read the records back, and check eddy's aggregates against a reference.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"math/rand"
	"os"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
)

// OrderCreatedEvent and OrderItem are seed 000's structs, unchanged.
type OrderCreatedEvent struct {
	OrderID     string      `json:"order_id"`
	UserID      string      `json:"user_id"`
	Items       []OrderItem `json:"items"`
	TotalAmount float64     `json:"total_amount"`
	Timestamp   int64       `json:"timestamp"`
}

type OrderItem struct {
	ProductID string  `json:"product_id"`
	Quantity  int     `json:"quantity"`
	UnitPrice float64 `json:"unit_price"`
}

// OrderCreatedV2 is a second version in seed 001's style: a `version` field, renamed fields.
type OrderCreatedV2 struct {
	Version    int         `json:"version"`
	OrderID    string      `json:"order_id"`
	CustomerID string      `json:"customer_id"`
	Items      []OrderItem `json:"items"`
	Total      float64     `json:"total"`
	Timestamp  int64       `json:"timestamp"`
}

// AnalyticsEvent is seed 002's struct, unchanged.
type AnalyticsEvent struct {
	ID         string            `json:"id,omitempty"`
	Timestamp  time.Time         `json:"timestamp"`
	EventType  string            `json:"eventType"`
	UserID     string            `json:"userId"`
	Properties map[string]string `json:"properties,omitempty"`
}

var eventTypes = []string{"page_view", "click", "search", "add_to_cart", "signup", "purchase"}

var zones = []*time.Location{
	time.UTC,
	time.FixedZone("MSK", 3*3600),
	time.FixedZone("EST", -5*3600),
	time.FixedZone("IST", 5*3600+1800),
}

func main() {
	brokers := flag.String("brokers", "localhost:9092", "comma-separated bootstrap servers")
	mode := flag.String("mode", "seed", "seed: orders and analytics events; versions: OrderCreated v1 and v2")
	orders := flag.String("orders", "orders", "orders topic (seed mode)")
	analytics := flag.String("analytics", "analytics", "analytics topic (seed mode)")
	v1 := flag.String("v1", "order.created.v1", "version 1 topic (versions mode)")
	v2 := flag.String("v2", "order.created.v2", "version 2 topic (versions mode)")
	n := flag.Int("n", 10000, "events to produce")
	start := flag.Int64("start", 1795000000, "event time of the first event, Unix seconds")
	stepMs := flag.Int("step-ms", 50, "event-time step between events, milliseconds")
	seed := flag.Int64("seed", 1, "random seed")
	flag.Parse()

	rng := rand.New(rand.NewSource(*seed))
	writer := &kafka.Writer{
		Addr:         kafka.TCP(strings.Split(*brokers, ",")...),
		Balancer:     &kafka.LeastBytes{},
		BatchSize:    500,
		BatchTimeout: 10 * time.Millisecond,
		RequiredAcks: kafka.RequireAll,
	}
	defer writer.Close()

	var messages []kafka.Message
	for i := 0; i < *n; i++ {
		// Event time moves forward with jitter well inside the topologies' 30 s grace.
		at := time.UnixMilli(*start*1000 + int64(i**stepMs)).Add(-time.Duration(rng.Intn(5000)) * time.Millisecond)
		at = at.Add(time.Duration(rng.Intn(1000000)) * time.Nanosecond)
		user := fmt.Sprintf("user-%d", rng.Intn(400))
		var topic string
		var key, payload []byte
		var err error
		switch {
		case *mode == "versions":
			items := randomItems(rng)
			order := OrderCreatedEvent{OrderID: fmt.Sprintf("order-%d", i), UserID: user, Items: items, TotalAmount: total(items), Timestamp: at.Unix()}
			key = []byte(order.OrderID)
			switch i % 3 {
			case 0: // version 1 on its own topic, no version field
				topic = *v1
				payload, err = json.Marshal(order)
			case 1: // version 2 on its own topic, with its version field
				topic = *v2
				payload, err = json.Marshal(OrderCreatedV2{Version: 2, OrderID: order.OrderID, CustomerID: user, Items: items, Total: order.TotalAmount, Timestamp: order.Timestamp})
			default: // version 2 published to the version 1 topic: the version field decides
				topic = *v1
				payload, err = json.Marshal(OrderCreatedV2{Version: 2, OrderID: order.OrderID, CustomerID: user, Items: items, Total: order.TotalAmount, Timestamp: order.Timestamp})
			}
		case i%10 == 9:
			items := randomItems(rng)
			order := OrderCreatedEvent{OrderID: fmt.Sprintf("order-%d", i), UserID: user, Items: items, TotalAmount: total(items), Timestamp: at.Unix()}
			topic, key = *orders, []byte(order.OrderID)
			payload, err = json.Marshal(order)
		default:
			event := AnalyticsEvent{
				Timestamp: at.In(zones[rng.Intn(len(zones))]),
				EventType: eventTypes[rng.Intn(len(eventTypes))],
				UserID:    user,
			}
			if i%4 != 0 {
				event.ID = fmt.Sprintf("evt-%d", i)
			}
			if i%3 != 0 {
				event.Properties = map[string]string{"page": fmt.Sprintf("/p/%d", rng.Intn(20))}
			}
			topic, key = *analytics, []byte(user)
			payload, err = json.Marshal(event)
		}
		if err != nil {
			log.Fatalf("marshal: %v", err)
		}
		messages = append(messages, kafka.Message{Topic: topic, Key: key, Value: payload})
	}
	if *mode == "versions" {
		// One record of a version nobody declared: eddy must dead-letter it with a reason.
		messages = append(messages, kafka.Message{Topic: *v1, Key: []byte("v3"), Value: []byte(`{"version":3,"order_id":"v3","customer":"x","timestamp":1795000000}`)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for len(messages) > 0 {
		batch := messages
		if len(batch) > 1000 {
			batch = batch[:1000]
		}
		if err := writer.WriteMessages(ctx, batch...); err != nil {
			log.Fatalf("write: %v", err)
		}
		messages = messages[len(batch):]
	}
	fmt.Fprintf(os.Stderr, "go-producer: wrote %d events (%s mode)\n", *n, *mode)
}

func randomItems(rng *rand.Rand) []OrderItem {
	items := make([]OrderItem, 1+rng.Intn(3))
	for j := range items {
		items[j] = OrderItem{ProductID: fmt.Sprintf("sku-%d", rng.Intn(50)), Quantity: 1 + rng.Intn(3), UnitPrice: float64(100+rng.Intn(9900)) / 100}
	}
	return items
}

func total(items []OrderItem) float64 {
	cents := 0
	for _, it := range items {
		cents += it.Quantity * int(it.UnitPrice*100+0.5)
	}
	return float64(cents) / 100
}
