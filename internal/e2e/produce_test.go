package e2e

import (
	"context"
	"fmt"

	"github.com/segmentio/kafka-go"

	"github.com/cdcflow/cdcflow/internal/demo"
	"github.com/cdcflow/cdcflow/internal/event"
	"github.com/cdcflow/cdcflow/internal/kafkax"
)

// produceRaw writes messages with the given values, and no key, to
// partition 0 of the pipeline's topic: messages a producer other than
// capture might send, valid or not.
func (p *pipeline) produceRaw(values ...string) {
	p.t.Helper()
	w := kafkax.NewWriter(p.brokers, p.topic, kafkax.WriterOptions{})
	w.Balancer = kafka.BalancerFunc(func(kafka.Message, ...int) int { return 0 })
	defer w.Close()
	msgs := make([]kafka.Message, len(values))
	for i, v := range values {
		msgs[i] = kafka.Message{Value: []byte(v)}
	}
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		p.t.Fatal(err)
	}
}

// insertEvent is the encoded demo insert of emp_id empID with salary,
// numbered id, addressed to table.
func insertEvent(id, empID, salary int, table string) string {
	return encoded(id, event.OpInsert, empID, salary, table)
}

// updateEvent is the encoded demo update of emp_id empID to salary.
func updateEvent(id, empID, salary int) string {
	return encoded(id, event.OpUpdate, empID, salary, demo.Table)
}

func encoded(id int, op event.Op, empID, salary int, table string) string {
	ev := demo.Event(int64(id), op, demo.Employee{EmpID: empID, FirstName: fmt.Sprintf("E%d", id), LastName: "L",
		DOB: "1990-01-02", City: "Oslo", Salary: salary})
	ev.Table = table
	b, err := event.Encode(ev)
	if err != nil {
		panic(err) // an Event of plain fields always encodes
	}
	return string(b)
}
