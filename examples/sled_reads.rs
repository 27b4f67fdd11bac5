//! How sled 0.34's point reads scale from one thread to two (BENCHMARKS.md, cheap calls).
//!
//! A token check is two `Tree::get`s: the token, then its owner. This runs the same pair of
//! reads on 300-byte values from one thread and then from two, first on a small working set
//! (256 tokens, 16 users: the cheap-call bench, where every read lands on the same few leaf
//! pages) and then on a spread one (20 000 of each). It prints the reads per second; nothing
//! is asserted.
//!
//! ```sh
//! cargo run --release --example sled_reads
//! ```

use std::time::Instant;

/// Read pairs per run, split between the threads.
const PAIRS: usize = 2_000_000;

fn main() -> Result<(), sled::Error> {
    for (tokens, users) in [(256u64, 16u64), (20_000, 20_000)] {
        let dir = std::env::temp_dir().join(format!("latchkey-sled-reads-{}", std::process::id()));
        let db = sled::Config::new()
            .path(&dir)
            .cache_capacity(64 << 20)
            .flush_every_ms(None)
            .open()?;
        let token_tree = db.open_tree("tokens")?;
        let user_tree = db.open_tree("users")?;
        let value = vec![b'x'; 300];
        for i in 0..tokens {
            token_tree.insert(i.to_be_bytes(), value.as_slice())?;
        }
        for i in 0..users {
            user_tree.insert(i.to_be_bytes(), value.as_slice())?;
        }
        db.flush()?;
        let mut single = 0.0;
        for threads in [1usize, 2] {
            let each = PAIRS / threads;
            let started = Instant::now();
            std::thread::scope(|s| {
                for thread in 0..threads {
                    let (token_tree, user_tree) = (&token_tree, &user_tree);
                    s.spawn(move || {
                        let mut bytes = 0usize;
                        for i in 0..each {
                            // A multiplicative hash spreads the keys over the set.
                            let k = (i as u64).wrapping_mul(2_654_435_761) + thread as u64 * 7919;
                            let token = token_tree.get((k % tokens).to_be_bytes());
                            let user = user_tree.get((k % users).to_be_bytes());
                            bytes += token.ok().flatten().map_or(0, |v| v.len());
                            bytes += user.ok().flatten().map_or(0, |v| v.len());
                        }
                        std::hint::black_box(bytes);
                    });
                }
            });
            let rate = (each * threads) as f64 / started.elapsed().as_secs_f64();
            if threads == 1 {
                single = rate;
            }
            println!(
                "{tokens:>6} tokens, {users:>6} users, {threads} thread(s): {rate:>9.0} pairs/s ({:.2}x one thread)",
                rate / single
            );
        }
        drop((token_tree, user_tree, db));
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
