# The Ruby mysql2 driver program of the client matrix (tests/clients/run.py speaks to
# it; protocol at the top of run.py): Mysql2::Client#query (text, MULTI_STATEMENTS),
# #prepare (server-side), #ping, threads for the cancel, read_timeout as its timeout.
require 'json'
require 'mysql2'

E = ENV
NAME = E.fetch('CL_NAME', 'mysql2ruby')
$stdout.sync = true

def out(h) = puts(JSON.generate(h))

def connect(target = 'baton', **extra)
  port = (target == 'direct' ? E['CL_DIRECT_PORT'] : E['CL_BATON_PORT']).to_i
  Mysql2::Client.new(host: E['CL_HOST'], port: port, username: E['CL_USER'], password: E['CL_PASSWORD'], database: E['CL_DB'], **extra)
end

def value(v)
  return nil if v.nil?
  return "0x#{v.unpack1('H*')}" if v.is_a?(String) && (v.encoding == Encoding::BINARY || !v.valid_encoding?)
  v.to_s
end

def one(r, affected)
  return { affected: affected } if r.nil?
  { cols: r.fields, rows: r.map { |row| row.map { |v| value(v) } } }
end

def param(p)
  k, v = p[0], p[2..]
  { 'i' => -> { v.to_i }, 'd' => -> { v.to_f }, 's' => -> { v }, 'b' => -> { [v].pack('H*') }, 'n' => -> { nil } }[k].call
end

def error(e) = { error: e.error_number, state: e.sql_state, msg: e.message }

def run_case(c, mode, sql, params)
  res = []
  if mode == 'prep'
    st = c.prepare(sql)
    r = st.execute(*params, as: :array)
    res << one(r, st.affected_rows)
    # A prepared CALL's further result sets: mysql2 has no API to read them (its
    # Statement has no next_result), so they are only counted and skipped.
    skipped = 0
    while c.more_results?
      c.next_result && c.store_result
      skipped += 1
    end
    res << { skipped_results: skipped } if skipped.positive?
    st.close
    return res
  end
  r = c.query(sql, as: :array)
  res << one(r, c.affected_rows)
  while c.next_result
    res << one(c.store_result, c.affected_rows)
  end
  res
end

def check(target)
  flags = Mysql2::Client::MULTI_STATEMENTS
  c = connect(target, flags: flags)
  File.foreach(E['CL_CASES'], encoding: 'UTF-8') do |line|
    next if line.start_with?('#') || line.strip.empty?
    name, mode, sql, *params = line.chomp.split("\t")
    begin
      out(case: name, out: run_case(c, mode, sql.gsub('{t}', "cl_#{NAME}"), params.map { |p| param(p) }))
    rescue Mysql2::Error => e
      out(case: name, out: error(e))
      c = connect(target, flags: flags) if e.error_number.to_i.zero? || e.error_number >= 2000
    rescue StandardError => e # the driver's own failure (a value it cannot convert): start afresh
      out(case: name, out: { exception: "#{e.class}: #{e.message}" })
      c = connect(target, flags: flags)
    end
  end
  t = "cl_#{NAME}_types"
  c.query('BEGIN'); c.query("INSERT INTO #{t} (id) VALUES (10)"); c.query('ROLLBACK')
  c.query('BEGIN'); c.query("INSERT INTO #{t} (id) VALUES (11)"); c.query('COMMIT')
  out(case: 'tx', out: one(c.query("SELECT id FROM #{t} WHERE id IN (10, 11)", as: :array), 0))
  out(case: 'ping', out: c.ping)
  c.close
end

def timed
  t0 = Time.now
  v, err = yield, nil
rescue StandardError => e
  v, err = nil, (e.respond_to?(:error_number) && e.error_number) || e.class.to_s
ensure
  return { value: value(v), error: err, ms: ((Time.now - t0) * 1000).to_i }
end

def cancel
  # KILL QUERY <thread_id from the handshake> from a second connection; a bystander on a third.
  victim, by, killer = connect, connect, connect
  res = {}
  tb = Thread.new { res[:bystander] = timed { by.query('SELECT SLEEP(2)', as: :array).first[0] } }
  tk = Thread.new { sleep 0.5; killer.query("KILL QUERY #{victim.thread_id}") }
  res[:victim] = timed { victim.query('SELECT SLEEP(5)', as: :array).first[0] }
  tb.join; tk.join
  res[:after] = value(victim.query('SELECT 1', as: :array).first[0])
  out(case: 'kill', out: res)
  c = connect(read_timeout: 1)
  r = timed { c.query('SELECT SLEEP(5)', as: :array).first[0] }
  r[:after] = value(connect.query('SELECT 1', as: :array).first[0])
  out(case: 'timeout', out: r)
end

$w = nil
def op(kind, seq, gtid)
  $w ||= connect
  ins = ->(s) { "INSERT INTO cl_rows (driver, seq, kind) VALUES ('#{NAME}', #{s}, '#{kind}')" }
  case kind
  when 'text' then $w.query(ins.(seq))
  when 'prep' then $w.prepare("INSERT INTO cl_rows (driver, seq, kind) VALUES (?, ?, 'prep')").tap { |st| st.execute(NAME, seq); st.close }
  else
    begin
      $w.query('BEGIN'); $w.query(ins.(seq)); $w.query(ins.(-seq)); $w.query('COMMIT')
    rescue Mysql2::Error
      begin; $w.query('ROLLBACK'); rescue Mysql2::Error; end
      raise
    end
  end
  gtid ? $w.query('SELECT @@last_gtid', as: :array).first[0] : nil
rescue Mysql2::Error => e
  $w = nil if e.error_number.to_i.zero? || e.error_number >= 2000 # gone: a new connection next time
  raise
end

def write(stop)
  kinds = %w[text prep tx]
  seq = 0
  until File.exist?(stop)
    seq += 1
    k = kinds[seq % 3]
    begin
      op(k, seq, false)
      out(ack: seq, k: k)
    rescue Mysql2::Error => e
      out(fail: seq, k: k, code: e.error_number.to_i, msg: e.message, t: (Time.now.to_f * 1000).to_i)
    end
    sleep 0.01
  end
end

# A session left idle until the file exists (run.py makes it right after the crash), then SELECT 1.
def probe(path)
  c = connect
  c.query('SELECT 1')
  sleep 0.005 until File.exist?(path)
  out(probe: timed { c.query('SELECT 1', as: :array).first[0] })
end

out(driver: NAME, version: Mysql2::VERSION)
$stdin.each_line do |line|
  cmd, arg = line.split
  break if cmd == 'quit'
  begin
    case cmd
    when 'check' then check(arg)
    when 'cancel' then cancel
    when 'probe' then probe(arg)
    when 'gtid' then out(gtid: op(arg, 0, true))
    when 'write' then write(arg)
    end
  rescue StandardError => e
    out(error: "#{cmd}: #{e.class}: #{e.message}")
  end
  out(done: cmd)
end
