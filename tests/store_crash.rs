//! Crash test: 64 concurrent writers in a separate skiff process, killed with SIGKILL at random
//! moments, 20 times over. After every kill each acknowledged write must be in the database with
//! its exact revision and value, and revisions must keep increasing across restarts.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::Rng;
use skiff::store::sqlite::{SqliteBackend, SqliteOptions};
use skiff::store::Backend;

const ROUNDS: usize = 20;
const WRITERS: usize = 64;

struct Ack {
    key: String,
    revision: i64,
    value: String,
}

fn parse(line: &str) -> Option<Ack> {
    let mut parts = line.split(' ');
    if parts.next()? != "ack" {
        return None;
    }
    let key = parts.next()?.to_string();
    let revision = parts.next()?.parse().ok()?;
    let value = parts.next()?.to_string();
    Some(Ack { key, revision, value })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rng();
    let mut floor = 0i64; // the highest revision seen in the database after the previous round
    let mut total_acks = 0usize;
    for round in 0..ROUNDS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["debug", "store-load", "--writers", &WRITERS.to_string()])
            .args(["--run-id", &format!("r{round}")])
            .arg("--data-dir")
            .arg(dir.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn skiff debug store-load");
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| parse(&l))
                .collect::<Vec<_>>()
        });
        // Let it write for a random while (start-up included), then kill it mid-flight.
        let wait = rng.random_range(150..900);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        // SAFETY: plain syscall on a child we own.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let status = child.wait().unwrap();
        assert!(!status.success(), "round {round}: the writer must have been killed");
        let acks = reader.join().unwrap();

        let backend = SqliteBackend::open(
            &SqliteBackend::db_path(dir.path()),
            SqliteOptions {
                compaction_interval: Duration::from_secs(3600),
                ..SqliteOptions::default()
            },
        )
        .expect("the database opens after a SIGKILL");
        let current = backend.current_revision().await.unwrap();
        let mut last = 0;
        for ack in &acks {
            assert!(
                ack.revision > floor,
                "round {round}: revision {} not above {floor}",
                ack.revision
            );
            let kv = backend.get_at(&ack.key, ack.revision).await.unwrap().unwrap_or_else(|| {
                panic!("round {round}: acknowledged {} at {} is missing", ack.key, ack.revision)
            });
            assert_eq!(kv.mod_revision, ack.revision, "round {round}: {}", ack.key);
            assert_eq!(kv.value, ack.value.as_bytes(), "round {round}: {}", ack.key);
            last = last.max(ack.revision);
        }
        assert!(
            current >= last,
            "round {round}: current revision {current} below an acknowledged {last}"
        );
        floor = current;
        total_acks += acks.len();
        drop(backend);
    }
    assert!(
        total_acks > ROUNDS * WRITERS,
        "the writers made progress ({total_acks} acknowledged writes)"
    );
    eprintln!("{ROUNDS} kills, {total_acks} acknowledged writes verified, final revision {floor}");
}
