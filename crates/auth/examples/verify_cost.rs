//! Measure what a CONNECT costs: `cargo run --release -p midge-auth --example verify_cost [iterations]`.

use std::time::Instant;

use midge_auth::{DEFAULT_ITERATIONS, HashAlgorithm, PasswordFile, PasswordHash};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let iterations = match std::env::args().nth(1) {
        Some(s) => s.parse()?,
        None => DEFAULT_ITERATIONS,
    };
    let hash = PasswordHash::create(b"correct horse", HashAlgorithm::Sha512Pbkdf2, iterations)?;
    let file = PasswordFile::parse(&format!("alice:{}\n", hash.encode()))?;
    let rounds = 10u32;

    let t = Instant::now();
    for _ in 0..rounds {
        assert!(!file.verify("alice", b"wrong horse"));
    }
    let miss = t.elapsed() / rounds;

    let t = Instant::now();
    assert!(file.verify("alice", b"correct horse"));
    let first = t.elapsed();

    let hits = 10_000u32;
    let t = Instant::now();
    for _ in 0..hits {
        assert!(file.verify("alice", b"correct horse"));
    }
    let hit = t.elapsed() / hits;

    println!("iterations:            {iterations}");
    println!("wrong password:        {miss:?} per verify");
    println!("first success:         {first:?}");
    println!("cached success:        {hit:?} per verify");
    Ok(())
}
