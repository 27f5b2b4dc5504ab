//! Writes signed webhook payloads for the load benchmark (bench/webhook/run.sh): one per line,
//! `<X-Hub-Signature-256>\t<body>`, each a message status webhook with its own message id, so
//! every request is a new event (not a deduplicated redelivery).
//!
//! cargo run --release --example webhook_payloads -- <count> <app-secret> <out-file> [first-id]

use std::io::{BufWriter, Write};

use whatsapp_bridge::whatsapp::signature;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (count, secret, out, first) = match args.as_slice() {
        [_, count, secret, out] => (count, secret, out, "0"),
        [_, count, secret, out, first] => (count, secret, out, first.as_str()),
        _ => {
            eprintln!("usage: webhook_payloads <count> <app-secret> <out-file> [first-id]");
            std::process::exit(2);
        }
    };
    let first: u64 = first.parse().unwrap_or_else(|_| {
        eprintln!("first-id must be a number");
        std::process::exit(2)
    });
    let count: u64 = count.parse().unwrap_or_else(|_| {
        eprintln!("count must be a number");
        std::process::exit(2)
    });
    let mut file = BufWriter::new(std::fs::File::create(out)?);
    let statuses = ["sent", "delivered", "read"];
    for i in first..first + count {
        let body = serde_json::json!({
            "object": "whatsapp_business_account",
            "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
                "statuses": [{
                    "id": format!("wamid.BENCH{i:012}"),
                    "status": statuses[(i % 3) as usize],
                    "timestamp": "1764182401",
                    "recipient_id": "16505551234",
                    "conversation": {"id": "c1", "origin": {"type": "service"}},
                    "pricing": {"billable": false, "pricing_model": "PMP", "category": "service"}
                }]
            }}]}]
        })
        .to_string();
        let signature = signature::sign(secret.as_bytes(), body.as_bytes());
        writeln!(file, "{signature}\t{body}")?;
    }
    file.flush()
}
