//! The media workers' UDP sockets as the kernel and a second process see them: each worker port is held by
//! two sockets of the server, one that reads and a sibling that only sends (`udp/src/pair.rs`), and a
//! second server on the same port still fails start-up.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chorus_loadtest::procstat;
use chorus_tests::{chorus_bin, free_tcp_port, Server};

/// The inodes of the IPv4 UDP sockets bound to local `port`, whoever holds them.
fn udp_sockets_on(port: u16) -> anyhow::Result<Vec<String>> {
    let table = std::fs::read_to_string("/proc/net/udp")?;
    Ok(procstat::udp_table(&table)
        .into_iter()
        .filter(|row| row.local_port == port)
        .map(|row| row.inode)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_port_is_two_sockets_of_the_server_and_a_second_server_cannot_take_it(
) -> anyhow::Result<()> {
    let server = Server::start(&["--media-tcp-enabled", "false"]).await?;
    let port = server.media.port();
    let ours = procstat::socket_inodes(server.pid())?;
    let on_port = udp_sockets_on(port)?;
    println!("sockets: UDP port {port} held by inodes {on_port:?}");
    assert_eq!(on_port.len(), 2, "one reading and one sending socket");
    assert!(
        on_port.iter().all(|inode| ours.contains(inode)),
        "both are the server's"
    );
    assert!(
        server.log_tail().contains("sending_sibling=true"),
        "the server logs its sending sibling: {}",
        server.log_tail()
    );

    // Another process of the same user cannot bind the port, plainly...
    let plain = std::net::UdpSocket::bind(server.media).expect_err("the port is taken");
    assert_eq!(plain.kind(), std::io::ErrorKind::AddrInUse);
    // ...nor as a second server, which fails start-up with a clear error instead of running deaf.
    let log = std::env::temp_dir().join(format!("chorus-second-{}.log", std::process::id()));
    let mut second = Command::new(chorus_bin()?)
        .args(["--http-listen", &format!("127.0.0.1:{}", free_tcp_port())])
        .args(["--media-port-start", &port.to_string()])
        .args(["--workers", "1", "--media-tcp-enabled", "false"])
        .env("CHORUS_MEDIA_DEV_LAN_CANDIDATE", "false")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = second.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            anyhow::bail!("a second server on port {port} did not exit");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let text = std::fs::read_to_string(&log)?;
    let _ = std::fs::remove_file(&log);
    assert!(
        !status.success(),
        "a second server on the same port exited with {status}"
    );
    assert!(
        text.contains("Address already in use"),
        "the second server says why: {text}"
    );
    assert_eq!(
        udp_sockets_on(port)?,
        on_port,
        "the first server keeps its port"
    );
    Ok(())
}
