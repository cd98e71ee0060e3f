// The Go driver program of the client matrix (tests/clients/run.py speaks to it;
// protocol at the top of run.py): database/sql with go-sql-driver/mysql (Debian's
// package, GOPATH mode). database/sql is the pool; arguments make server-side
// prepared statements (the driver's default); a context deadline is its cancel API.
package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/go-sql-driver/mysql"
)

var (
	env  = os.Getenv
	name = env("CL_NAME")
	ctx  = context.Background()
)

type M = map[string]interface{}

func out(m M) {
	b, _ := json.Marshal(m)
	os.Stdout.Write(append(b, '\n'))
}

func open(target, params string) *sql.DB {
	port := env("CL_BATON_PORT")
	if target == "direct" {
		port = env("CL_DIRECT_PORT")
	}
	db, err := sql.Open("mysql", fmt.Sprintf("%s:%s@tcp(%s:%s)/%s%s", env("CL_USER"), env("CL_PASSWORD"), env("CL_HOST"), port, env("CL_DB"), params))
	if err != nil {
		panic(err)
	}
	db.SetMaxOpenConns(2)
	return db
}

func value(v interface{}) interface{} {
	switch x := v.(type) {
	case nil:
		return nil
	case []byte:
		if utf8.Valid(x) {
			return string(x)
		}
		return "0x" + hex.EncodeToString(x)
	case time.Time:
		return x.Format(time.RFC3339Nano)
	}
	return fmt.Sprint(v)
}

func code(err error) int {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return int(me.Number)
	}
	return 0
}

func fail(err error) M { return M{"error": code(err), "msg": err.Error()} }

type querier interface {
	QueryContext(context.Context, string, ...interface{}) (*sql.Rows, error)
	ExecContext(context.Context, string, ...interface{}) (sql.Result, error)
}

// Every result of a query: {cols, rows} per result set.
func results(q querier, query string, args ...interface{}) ([]M, error) {
	w := strings.ToUpper(strings.Fields(query)[0])
	if w != "SELECT" && w != "CALL" && !strings.Contains(query, ";") {
		r, err := q.ExecContext(ctx, query, args...)
		if err != nil {
			return nil, err
		}
		n, _ := r.RowsAffected()
		return []M{{"affected": n}}, nil
	}
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var res []M
	for {
		types, _ := rows.ColumnTypes()
		cols := []string{}
		for _, t := range types {
			cols = append(cols, t.Name()+" "+t.DatabaseTypeName())
		}
		data := [][]interface{}{}
		for rows.Next() {
			vals := make([]interface{}, len(cols))
			ptrs := make([]interface{}, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				return nil, err
			}
			row := []interface{}{}
			for _, v := range vals {
				row = append(row, value(v))
			}
			data = append(data, row)
		}
		res = append(res, M{"cols": cols, "rows": data})
		if !rows.NextResultSet() {
			break
		}
	}
	return res, rows.Err()
}

func param(p string) interface{} {
	v := p[2:]
	switch p[0] {
	case 'i':
		n, _ := strconv.ParseInt(v, 10, 64)
		return n
	case 'd':
		f, _ := strconv.ParseFloat(v, 64)
		return f
	case 's':
		return v
	case 'b':
		b, _ := hex.DecodeString(v)
		return b
	}
	return nil
}

func check(target string) {
	db := open(target, "?multiStatements=true")
	defer db.Close()
	c, err := db.Conn(ctx) // one session for the cases, as the other programs
	if err != nil {
		panic(err)
	}
	text, _ := os.ReadFile(env("CL_CASES"))
	for _, line := range strings.Split(string(text), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Split(line, "\t")
		query := strings.ReplaceAll(f[2], "{t}", "cl_"+name)
		args := []interface{}{}
		for _, p := range f[3:] {
			args = append(args, param(p))
		}
		res, err := results(c, query, args...)
		if err != nil {
			out(M{"case": f[0], "out": fail(err)})
		} else {
			out(M{"case": f[0], "out": res})
		}
	}
	c.Close()
	t := "cl_" + name + "_types"
	tx, _ := db.Begin()
	tx.Exec("INSERT INTO " + t + " (id) VALUES (10)")
	tx.Rollback()
	tx, _ = db.Begin()
	tx.Exec("INSERT INTO " + t + " (id) VALUES (11)")
	tx.Commit()
	res, err := results(db, "SELECT id FROM "+t+" WHERE id IN (10, 11)")
	out(M{"case": "tx", "out": []interface{}{res, value(err)}})
	out(M{"case": "ping", "out": value(db.PingContext(ctx))})
	// The pool: sessions handed back and taken again, in parallel.
	var wg sync.WaitGroup
	got := make([]interface{}, 4)
	for i := range got {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r, err := results(db, "SELECT ? + 1, DATABASE(), @@autocommit", i)
			got[i] = []interface{}{r, value(err)}
		}(i)
	}
	wg.Wait()
	out(M{"case": "pool", "out": got})
}

func timed(q querier, c context.Context, query string) M {
	t0 := time.Now()
	var v interface{}
	err := q.(interface {
		QueryRowContext(context.Context, string, ...interface{}) *sql.Row
	}).QueryRowContext(c, query).Scan(&v)
	m := M{"value": value(v), "error": nil, "ms": time.Since(t0).Milliseconds()}
	if err != nil {
		m["value"], m["error"] = nil, code(err)
		if code(err) == 0 {
			m["error"] = err.Error()
		}
	}
	return m
}

func cancel() {
	db := open("baton", "")
	defer db.Close()
	db.SetMaxOpenConns(4)
	victim, _ := db.Conn(ctx)
	by, _ := db.Conn(ctx)
	var vid int64
	victim.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&vid)
	res := M{}
	var wg sync.WaitGroup
	var mu sync.Mutex
	wg.Add(2)
	go func() {
		defer wg.Done()
		r := timed(by, ctx, "SELECT SLEEP(2)")
		mu.Lock()
		res["bystander"] = r
		mu.Unlock()
	}()
	go func() {
		defer wg.Done()
		time.Sleep(500 * time.Millisecond)
		if _, err := db.ExecContext(ctx, fmt.Sprintf("KILL QUERY %d", vid)); err != nil {
			mu.Lock()
			res["killer"] = err.Error()
			mu.Unlock()
		}
	}()
	v := timed(victim, ctx, "SELECT SLEEP(5)")
	wg.Wait()
	res["victim"] = v
	res["after"] = timed(victim, ctx, "SELECT 1")["value"]
	victim.Close()
	by.Close()
	out(M{"case": "kill", "out": res})
	// A context deadline: the driver closes that connection; the pool goes on.
	c, stop := context.WithTimeout(ctx, time.Second)
	r := timed(db, c, "SELECT SLEEP(5)")
	stop()
	r["after"] = timed(db, ctx, "SELECT 1")["value"]
	out(M{"case": "timeout", "out": r})
}

var writer *sql.DB

func op(kind string, seq int64, gtid bool) (string, error) {
	if writer == nil {
		writer = open("baton", "")
	}
	c, err := writer.Conn(ctx)
	if err != nil {
		return "", err
	}
	defer c.Close()
	ins := func(s int64) string {
		return fmt.Sprintf("INSERT INTO cl_rows (driver, seq, kind) VALUES ('%s', %d, '%s')", name, s, kind)
	}
	switch kind {
	case "text":
		_, err = c.ExecContext(ctx, ins(seq))
	case "prep":
		_, err = c.ExecContext(ctx, "INSERT INTO cl_rows (driver, seq, kind) VALUES (?, ?, 'prep')", name, seq)
	default:
		var tx *sql.Tx
		if tx, err = c.BeginTx(ctx, nil); err == nil {
			if _, err = tx.Exec(ins(seq)); err == nil {
				if _, err = tx.Exec(ins(-seq)); err == nil {
					err = tx.Commit()
				}
			}
			if err != nil {
				tx.Rollback()
			}
		}
	}
	if err != nil || !gtid {
		return "", err
	}
	var g string
	err = c.QueryRowContext(ctx, "SELECT @@last_gtid").Scan(&g)
	return g, err
}

func write(stop string) {
	kinds := []string{"text", "prep", "tx"}
	for seq := int64(1); ; seq++ {
		if _, err := os.Stat(stop); err == nil {
			return
		}
		k := kinds[seq%3]
		if _, err := op(k, seq, false); err != nil {
			out(M{"fail": seq, "k": k, "code": code(err), "msg": err.Error(), "t": time.Now().UnixMilli()})
		} else {
			out(M{"ack": seq, "k": k})
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A session left idle until the file exists (run.py makes it right after the crash), then SELECT 1.
func probe(path string) {
	db := open("baton", "")
	defer db.Close()
	c, err := db.Conn(ctx)
	if err != nil {
		panic(err)
	}
	defer c.Close()
	timed(c, ctx, "SELECT 1")
	for {
		if _, err := os.Stat(path); err == nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	out(M{"probe": timed(c, ctx, "SELECT 1")})
}

func version() string {
	// The driver has no version constant; Debian's package says it.
	b, err := exec.Command("dpkg-query", "-W", "-f", "${Version}", "golang-github-go-sql-driver-mysql-dev").Output()
	if err != nil {
		return "?"
	}
	return strings.SplitN(string(b), "-", 2)[0]
}

func main() {
	out(M{"driver": name, "version": version()})
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		a := strings.Fields(in.Text())
		if len(a) == 0 {
			continue
		}
		if a[0] == "quit" {
			break
		}
		func() {
			defer func() {
				if r := recover(); r != nil {
					out(M{"error": fmt.Sprintf("%s: %v", a[0], r)})
				}
			}()
			switch a[0] {
			case "check":
				check(a[1])
			case "cancel":
				cancel()
			case "probe":
				probe(a[1])
			case "gtid":
				g, err := op(a[1], 0, true)
				if err != nil {
					out(M{"error": "gtid: " + err.Error()})
				}
				out(M{"gtid": g})
			case "write":
				write(a[1])
			}
		}()
		out(M{"done": a[0]})
	}
}
