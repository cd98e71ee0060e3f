<?php
// The PHP driver program of the client matrix (tests/clients/run.py speaks to it;
// protocol at the top of run.py): mysqlnd through PDO (`client.php pdo`: emulated
// prepares by default, real ones as "/server", persistent connections as the pool)
// or mysqli (`client.php mysqli`: real prepares, ping, change_user, async queries).
$API = $argv[1];
$E = getenv();
$NAME = $E['CL_NAME'] ?? $API;

function out($o) { echo json_encode($o, JSON_UNESCAPED_UNICODE), "\n"; }
function port($target) { global $E; return (int)$E[$target === 'direct' ? 'CL_DIRECT_PORT' : 'CL_BATON_PORT']; }
function value($v) {
    if ($v === null) return null;
    if (is_string($v) && !preg_match('//u', $v)) return '0x' . bin2hex($v);
    return (string)$v;
}
function param($p) {
    $v = substr($p, 2);
    switch ($p[0]) {
        case 'i': return [(int)$v, 'i'];
        case 'd': return [(float)$v, 'd'];
        case 's': return [$v, 's'];
        case 'b': return [hex2bin($v), 's'];
        default: return [null, 's'];
    }
}
function cases() {
    global $E, $NAME;
    foreach (file($E['CL_CASES'], FILE_IGNORE_NEW_LINES) as $line) {
        if ($line === '' || $line[0] === '#') continue;
        $f = explode("\t", $line);
        yield [$f[0], $f[1], str_replace('{t}', "cl_$NAME", $f[2]), array_map('param', array_slice($f, 3))];
    }
}

// ---- PDO ----
function pdo($target, $extra = []) {
    global $E;
    return new PDO("mysql:host={$E['CL_HOST']};port=" . port($target) . ";dbname={$E['CL_DB']}", $E['CL_USER'], $E['CL_PASSWORD'],
        $extra + [PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION]);
}
function pdo_results($st) {
    $res = [];
    do {
        if ($st->columnCount() > 0) {
            $cols = [];
            for ($i = 0; $i < $st->columnCount(); $i++) { $m = $st->getColumnMeta($i) ?: []; $cols[] = ($m["name"] ?? "?") . " " . ($m["native_type"] ?? "?"); }
            $rows = array_map(fn($r) => array_map('value', $r), $st->fetchAll(PDO::FETCH_NUM));
            $res[] = ['cols' => $cols, 'rows' => $rows];
        } else {
            $res[] = ['affected' => $st->rowCount()];
        }
    } while ($st->nextRowset());
    return $res;
}
function pdo_case($c, $mode, $sql, $params) {
    if ($mode !== 'prep') return pdo_results($c->query($sql));
    $st = $c->prepare($sql);
    foreach ($params as $i => [$v, $t]) $st->bindValue($i + 1, $v, $v === null ? PDO::PARAM_NULL : ($t === 'i' ? PDO::PARAM_INT : PDO::PARAM_STR));
    $st->execute();
    return pdo_results($st);
}
function pdo_error($e) { return ['error' => $e->errorInfo[1] ?? 0, 'state' => $e->errorInfo[0] ?? null, 'msg' => $e->errorInfo[2] ?? $e->getMessage()]; }
function pdo_check($target) {
    global $NAME;
    $c = pdo($target);
    $s = pdo($target, [PDO::ATTR_EMULATE_PREPARES => false]);
    foreach (cases() as [$name, $mode, $sql, $params]) {
        foreach ($mode === 'prep' ? [[$name, $c], ["$name/server", $s]] : [[$name, $c]] as [$n, $conn]) {
            try { out(['case' => $n, 'out' => pdo_case($conn, $mode, $sql, $params)]); }
            catch (PDOException $e) { out(['case' => $n, 'out' => pdo_error($e)]); }
        }
    }
    $t = "cl_{$NAME}_types";
    // LOAD DATA LOCAL INFILE: the server asks for the file mid-command, the client sends it.
    $file = tempnam(sys_get_temp_dir(), 'infile');
    file_put_contents($file, "40,infile a\n41,infile b\n42,\\N\n");
    $l = pdo($target, [PDO::MYSQL_ATTR_LOCAL_INFILE => true]);
    try {
        $n = $l->exec("LOAD DATA LOCAL INFILE " . $l->quote($file) . " INTO TABLE $t FIELDS TERMINATED BY ',' (id, s)");
        out(['case' => 'local_infile', 'out' => [$n, pdo_results($l->query("SELECT id, s FROM $t WHERE id >= 40 ORDER BY id"))]]);
    } catch (PDOException $e) { out(['case' => 'local_infile', 'out' => pdo_error($e)]); }
    unlink($file);
    $c->beginTransaction(); $c->exec("INSERT INTO $t (id) VALUES (10)"); $c->rollBack();
    $c->beginTransaction(); $c->exec("INSERT INTO $t (id) VALUES (11)"); $c->commit();
    out(['case' => 'tx', 'out' => pdo_results($c->query("SELECT id FROM $t WHERE id IN (10, 11)"))]);
    // Persistent connections: PDO's pool, one connection reused by the next new PDO.
    $ids = [];
    for ($i = 0; $i < 3; $i++) {
        $p = pdo($target, [PDO::ATTR_PERSISTENT => true]);
        $ids[] = $p->query('SELECT CONNECTION_ID()')->fetchColumn();
        $p = null;
    }
    out(['case' => 'pool', 'out' => count(array_unique($ids))]);
}

// ---- mysqli ----
mysqli_report(MYSQLI_REPORT_ERROR | MYSQLI_REPORT_STRICT);
function my($target, $opts = []) {
    global $E;
    $m = mysqli_init();
    foreach ($opts as $k => $v) $m->options($k, $v);
    $m->real_connect($E['CL_HOST'], $E['CL_USER'], $E['CL_PASSWORD'], $E['CL_DB'], port($target));
    return $m;
}
function my_one($r, $affected) {
    if ($r === false || $r === true) return ['affected' => $affected];
    $cols = array_map(fn($f) => "$f->name $f->type", $r->fetch_fields());
    return ['cols' => $cols, 'rows' => array_map(fn($row) => array_map('value', $row), $r->fetch_all(MYSQLI_NUM))];
}
function my_case($m, $mode, $sql, $params) {
    $res = [];
    if ($mode === 'prep') {
        $st = $m->prepare($sql);
        if ($params) {
            $vals = array_column($params, 0);
            $st->bind_param(implode('', array_column($params, 1)), ...$vals);
        }
        $st->execute();
        do { $res[] = my_one($st->get_result(), $st->affected_rows); } while ($st->more_results() && $st->next_result());
        return $res;
    }
    $mode === 'multi' ? $m->multi_query($sql) : $m->real_query($sql);
    do { $res[] = my_one($m->store_result(), $m->affected_rows); } while ($m->more_results() && $m->next_result());
    return $res;
}
function my_error($e) { return ['error' => $e->getCode(), 'state' => $e->getSqlState(), 'msg' => $e->getMessage()]; }
function my_check($target) {
    global $NAME, $E;
    $m = my($target);
    foreach (cases() as [$name, $mode, $sql, $params]) {
        try { out(['case' => $name, 'out' => my_case($m, $mode, $sql, $params)]); }
        catch (mysqli_sql_exception $e) { out(['case' => $name, 'out' => my_error($e)]); }
    }
    $t = "cl_{$NAME}_types";
    // A server-side cursor: COM_STMT_EXECUTE with a read-only cursor, rows by COM_STMT_FETCH.
    $st = $m->prepare("SELECT id, s FROM $t WHERE id > ? ORDER BY id");
    $st->attr_set(MYSQLI_STMT_ATTR_CURSOR_TYPE, MYSQLI_CURSOR_TYPE_READ_ONLY);
    $zero = 0;
    $st->bind_param('i', $zero);
    $st->execute();
    $st->bind_result($id, $s);
    $rows = [];
    while ($st->fetch()) $rows[] = [value($id), value($s)];
    $st->close();
    out(['case' => 'cursor', 'out' => $rows]);
    // COM_STMT_SEND_LONG_DATA: a parameter sent in pieces before the execute.
    $st = $m->prepare('SELECT LENGTH(?), MD5(?), ?');
    $null = null;
    $three = 3;
    $st->bind_param('bbi', $null, $null, $three);
    $st->send_long_data(0, str_repeat('L', 100000));
    $st->send_long_data(0, 'tail');
    $st->send_long_data(1, 'héllo');
    $st->execute();
    out(['case' => 'long_data', 'out' => my_one($st->get_result(), 0)]);
    $st->close();
    $m->begin_transaction(); $m->query("INSERT INTO $t (id) VALUES (10)"); $m->rollback();
    $m->begin_transaction(); $m->query("INSERT INTO $t (id) VALUES (11)"); $m->commit();
    out(['case' => 'tx', 'out' => my_one($m->query("SELECT id FROM $t WHERE id IN (10, 11)"), 0)]);
    out(['case' => 'ping', 'out' => $m->ping()]);
    $m->query('SET SESSION wait_timeout = 77');
    $m->change_user($E['CL_USER'], $E['CL_PASSWORD'], $E['CL_DB']);  // COM_CHANGE_USER
    out(['case' => 'change_user', 'out' => my_one($m->query('SELECT @@session.wait_timeout = @@global.wait_timeout, DATABASE()'), 0)]);
}

// ---- cancel ----
function timed($fn) {
    $t0 = microtime(true);
    try { $v = $fn(); $err = null; }
    catch (Exception $e) { $v = null; $err = $e instanceof PDOException ? ($e->errorInfo[1] ?? $e->getCode()) : $e->getCode(); }
    return ['value' => value($v), 'error' => $err, 'ms' => (int)((microtime(true) - $t0) * 1000)];
}
function cancel_mysqli() {
    // Async queries: the victim and a bystander run at once; KILL QUERY <thread_id> from a third.
    [$v, $b, $k] = [my('baton'), my('baton'), my('baton')];
    $t0 = microtime(true);
    $v->query('SELECT SLEEP(5)', MYSQLI_ASYNC);
    $b->query('SELECT SLEEP(2)', MYSQLI_ASYNC);
    usleep(500000);
    $k->query("KILL QUERY $v->thread_id");
    $res = [];
    foreach (['victim' => $v, 'bystander' => $b] as $who => $c) {
        $res[$who] = timed(function () use ($c) {
            for (;;) {
                $r = $e = $x = [$c];
                if (mysqli::poll($r, $e, $x, 10) > 0) return $c->reap_async_query()->fetch_row()[0];
            }
        });
        $res[$who]['ms'] = (int)((microtime(true) - $t0) * 1000);
    }
    $res['after'] = value($v->query('SELECT 1')->fetch_row()[0]);
    out(['case' => 'kill', 'out' => $res]);
    $c = my('baton', [MYSQLI_OPT_READ_TIMEOUT => 1]);
    $r = timed(fn() => $c->query('SELECT SLEEP(5)')->fetch_row()[0]);
    $r['after'] = value(my('baton')->query('SELECT 1')->fetch_row()[0]);
    out(['case' => 'timeout', 'out' => $r]);
}
function cancel_pdo() {
    // No async API: the killer and the bystander are forked processes with their own
    // connections (they end with SIGKILL, so no destructor touches the parent's).
    $v = pdo('baton');
    $vid = $v->query('SELECT CONNECTION_ID()')->fetchColumn();
    $file = tempnam(sys_get_temp_dir(), 'by');
    if (pcntl_fork() === 0) { usleep(500000); pdo('baton')->exec("KILL QUERY $vid"); posix_kill(posix_getpid(), SIGKILL); }
    if (pcntl_fork() === 0) {
        $r = timed(fn() => pdo('baton')->query('SELECT SLEEP(2)')->fetchColumn());
        file_put_contents($file, json_encode($r));
        posix_kill(posix_getpid(), SIGKILL);
    }
    $res = ['victim' => timed(fn() => $v->query('SELECT SLEEP(5)')->fetchColumn())];
    while (pcntl_wait($st) > 0);
    $res['bystander'] = json_decode(file_get_contents($file), true);
    unlink($file);
    $res['after'] = value($v->query('SELECT 1')->fetchColumn());
    out(['case' => 'kill', 'out' => $res]);
    ini_set('mysqlnd.net_read_timeout', '1');  // for connections made from now on
    $c = pdo('baton');
    ini_set('mysqlnd.net_read_timeout', '86400');
    $r = timed(fn() => $c->query('SELECT SLEEP(5)')->fetchColumn());
    $r['after'] = value(pdo('baton')->query('SELECT 1')->fetchColumn());
    out(['case' => 'timeout', 'out' => $r]);
}

// ---- writes ----
$W = null;
function op($kind, $seq, $gtid) {
    global $API, $NAME, $W;
    $ins = fn($s) => "INSERT INTO cl_rows (driver, seq, kind) VALUES ('$NAME', $s, '$kind')";
    try {
        if ($API === 'pdo') {
            $W = $W ?? pdo('baton', [PDO::ATTR_PERSISTENT => true]);
            if ($kind === 'text') $W->exec($ins($seq));
            elseif ($kind === 'prep') $W->prepare("INSERT INTO cl_rows (driver, seq, kind) VALUES (?, ?, 'prep')")->execute([$NAME, $seq]);
            else {
                $W->beginTransaction();
                try { $W->exec($ins($seq)); $W->exec($ins(-$seq)); $W->commit(); }
                catch (PDOException $e) { try { $W->rollBack(); } catch (Exception $x) {} throw $e; }
            }
            return $gtid ? $W->query('SELECT @@last_gtid')->fetchColumn() : null;
        }
        $W = $W ?? my('baton');
        if ($kind === 'text') $W->query($ins($seq));
        elseif ($kind === 'prep') { $st = $W->prepare("INSERT INTO cl_rows (driver, seq, kind) VALUES (?, ?, 'prep')"); $st->bind_param('si', $NAME, $seq); $st->execute(); }
        else {
            $W->begin_transaction();
            try { $W->query($ins($seq)); $W->query($ins(-$seq)); $W->commit(); }
            catch (mysqli_sql_exception $e) { try { $W->rollback(); } catch (Exception $x) {} throw $e; }
        }
        return $gtid ? $W->query('SELECT @@last_gtid')->fetch_row()[0] : null;
    } catch (Exception $e) {
        $code = $e instanceof PDOException ? ($e->errorInfo[1] ?? 0) : $e->getCode();
        if ($code < 1000 || $code >= 2000) $W = null;  // the connection is gone: a new one next time
        throw $e;
    }
}
function write($stop) {
    $kinds = ['text', 'prep', 'tx'];
    for ($seq = 1; !file_exists($stop); $seq++) {
        $k = $kinds[$seq % 3];
        try { op($k, $seq, false); out(['ack' => $seq, 'k' => $k]); }
        catch (Exception $e) {
            $code = $e instanceof PDOException ? ($e->errorInfo[1] ?? 0) : $e->getCode();
            out(['fail' => $seq, 'k' => $k, 'code' => (int)$code, 'msg' => $e->getMessage(), 't' => (int)(microtime(true) * 1000)]);
        }
        usleep(10000);
        clearstatcache();
    }
}

// A session left idle until the file exists (run.py makes it right after the crash), then SELECT 1.
function probe($path) {
    global $API;
    $c = $API === 'pdo' ? pdo('baton') : my('baton');
    $one = fn() => $API === 'pdo' ? $c->query('SELECT 1')->fetchColumn() : $c->query('SELECT 1')->fetch_row()[0];
    $one();
    while (!file_exists($path)) { usleep(5000); clearstatcache(); }
    out(['probe' => timed($one)]);
}

out(['driver' => $NAME, 'version' => phpversion('mysqlnd')]);
while (($line = fgets(STDIN)) !== false) {
    $a = explode(' ', trim($line));
    if ($a[0] === 'quit') break;
    try {
        switch ($a[0]) {
            case 'check': $API === 'pdo' ? pdo_check($a[1]) : my_check($a[1]); break;
            case 'cancel': $API === 'pdo' ? cancel_pdo() : cancel_mysqli(); break;
            case 'probe': probe($a[1]); break;
            case 'gtid': out(['gtid' => op($a[1], 0, true)]); break;
            case 'write': write($a[1]); break;
        }
    } catch (Throwable $e) {
        out(['error' => "$a[0]: " . get_class($e) . ': ' . $e->getMessage()]);
    }
    out(['done' => $a[0]]);
}
