//! Publish N QoS 0/1 messages as fast as the client allows and report the rate.
//!
//! `cargo run --release -p midge-client --example throughput -- 127.0.0.1 1883 100000 1`

use std::time::Instant;

use midge_client::{Client, ClientOptions, Event, QoS};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let host = args.get(1).map_or("127.0.0.1", String::as_str);
    let port: u16 = args.get(2).map_or(Ok(1883), |p| p.parse())?;
    let count: u64 = args.get(3).map_or(Ok(100_000), |n| n.parse())?;
    let qos = match args.get(4).map(String::as_str) {
        Some("1") => QoS::AtLeastOnce,
        Some("2") => QoS::ExactlyOnce,
        _ => QoS::AtMostOnce,
    };
    let (client, mut events) = Client::new(ClientOptions::new(host, port, "throughput"));
    let publisher = tokio::spawn(async move {
        for i in 0..count {
            if client
                .publish("bench/throughput", qos, false, i.to_string())
                .await
                .is_err()
            {
                break;
            }
        }
        client
    });
    let start = Instant::now();
    let mut done = 0u64;
    while done < count {
        if let Event::Published { .. } = events.poll().await? {
            done += 1;
        }
    }
    let elapsed = start.elapsed();
    let client = publisher.await?;
    client.disconnect().await?;
    while !matches!(events.poll().await?, Event::Closed) {}
    println!(
        "{count} messages (QoS {}) in {:.3} s: {:.0} msg/s",
        qos.as_u8(),
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}
