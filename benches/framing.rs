//! Criterion benchmarks of the hot path's pure parts: reading framed packets from
//! a buffer, and classifying a result set's packets (the work baton does per
//! response packet on top of copying it).
//!
//! `cargo bench --bench framing`

use std::hint::black_box;

use baton_proxy::packet::PacketIo;
use baton_proxy::proto;
use baton_proxy::relay::{Expect, Scanner};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// A text result set: 1 column, `rows` rows of `width` bytes, DEPRECATE_EOF terminator.
fn result_set(rows: usize, width: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut push = |seq: &mut u8, payload: &[u8]| {
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes()[..3]);
        out.push(*seq);
        out.extend_from_slice(payload);
        *seq = seq.wrapping_add(1);
    };
    let mut seq = 1u8;
    push(&mut seq, &[1]);
    push(&mut seq, b"\x03def\x00\x01t\x01t\x01c\x01c\x0c\x21\x00\x00\x01\x00\x00\xfd\x00\x00\x00\x00\x00");
    let mut row = vec![width as u8];
    row.extend(std::iter::repeat_n(b'x', width));
    for _ in 0..rows {
        push(&mut seq, &row);
    }
    let mut ok = proto::ok_payload(0, proto::SERVER_STATUS_AUTOCOMMIT);
    ok[0] = 0xfe;
    push(&mut seq, &ok);
    out
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let data = result_set(1000, 100);
    let mut g = c.benchmark_group("relay");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("read_raw+scan 1000x100B rows", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut io = PacketIo::new(std::io::Cursor::new(data.clone()));
                let mut s = Scanner::new(Expect::ResultSet, true);
                let mut n = 0;
                while !s.done() {
                    let p = io.read_raw().await.unwrap();
                    black_box(s.feed(&p));
                    n += 1;
                }
                n
            })
        })
    });
    g.finish();

    let point = result_set(1, 120);
    c.bench_function("read_raw+scan point select response", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut io = PacketIo::new(std::io::Cursor::new(point.clone()));
                let mut s = Scanner::new(Expect::ResultSet, true);
                while !s.done() {
                    let p = io.read_raw().await.unwrap();
                    black_box(s.feed(&p));
                }
            })
        })
    });
    let mut ok = proto::ok_payload(1, proto::SERVER_STATUS_AUTOCOMMIT | proto::SERVER_SESSION_STATE_CHANGED);
    ok.extend_from_slice(b"\x00\x14\x00\x12\x09last_gtid\x070-1-100");
    c.bench_function("parse_ok with last_gtid", |b| {
        b.iter(|| {
            let o = proto::parse_ok(black_box(&ok)).unwrap();
            black_box(proto::session_changes(o.session_state).len())
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
