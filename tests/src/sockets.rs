//! Sockets inside namespaces: threads that enter a network namespace and serve or talk
//! there. A socket belongs to the namespace it was created in, whatever thread uses it.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsFd,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use nix::sched::{CloneFlags, setns};

use crate::Netns;

impl Netns {
    /// Runs `f` on a new thread inside this namespace.
    pub fn spawn<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
        let file = std::fs::File::open(self.path()).expect("open the netns");
        std::thread::spawn(move || {
            setns(file.as_fd(), CloneFlags::CLONE_NEWNET).expect("enter the netns");
            f()
        })
    }

    /// Runs `f` inside this namespace and returns its result.
    pub fn within<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f).join().expect("thread inside the netns")
    }
}

/// A server thread that stops when dropped.
pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Echoes every TCP connection on `address` in `netns` (a thread per connection).
pub fn tcp_echo_server(netns: &Netns, address: SocketAddr) -> Server {
    let stop = Arc::new(AtomicBool::new(false));
    let listener = netns.within(move || TcpListener::bind(address).expect("bind the TCP server"));
    listener.set_nonblocking(true).expect("nonblocking listener");
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    let _ = stream.set_nonblocking(false);
                    std::thread::spawn(move || {
                        let mut buffer = [0u8; 65536];
                        while let Ok(read) = stream.read(&mut buffer) {
                            if read == 0 || stream.write_all(&buffer[..read]).is_err() {
                                break;
                            }
                        }
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    Server {
        stop,
        thread: Some(thread),
    }
}

/// Answers every UDP datagram on `address` in `netns` with `<tag>:<datagram>`.
pub fn udp_echo_server(netns: &Netns, address: SocketAddr, tag: &str) -> Server {
    let stop = Arc::new(AtomicBool::new(false));
    let socket = netns.within(move || UdpSocket::bind(address).expect("bind the UDP server"));
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let flag = stop.clone();
    let tag = tag.as_bytes().to_vec();
    let thread = std::thread::spawn(move || {
        let mut buffer = [0u8; 2048];
        while !flag.load(Ordering::Relaxed) {
            if let Ok((read, peer)) = socket.recv_from(&mut buffer) {
                let mut reply = tag.clone();
                reply.push(b':');
                reply.extend_from_slice(&buffer[..read]);
                let _ = socket.send_to(&reply, peer);
            }
        }
    });
    Server {
        stop,
        thread: Some(thread),
    }
}

/// Connects from `netns` to `target`, sends `total` bytes in chunks and reads the echo
/// back; returns the bytes echoed correctly, or the error.
pub fn tcp_echo_exchange(netns: &Netns, target: SocketAddr, total: usize) -> Result<usize, String> {
    netns.within(move || {
        let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(3))
            .map_err(|error| format!("connect: {error}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .map_err(|error| error.to_string())?;
        let chunk: Vec<u8> = (0..16384u32).map(|i| (i % 251) as u8).collect();
        let mut echoed = 0;
        let mut back = vec![0u8; chunk.len()];
        while echoed < total {
            stream
                .write_all(&chunk)
                .map_err(|error| format!("write: {error}"))?;
            stream
                .read_exact(&mut back)
                .map_err(|error| format!("read after {echoed} bytes: {error}"))?;
            if back != chunk {
                return Err(format!("corrupted echo after {echoed} bytes"));
            }
            echoed += chunk.len();
        }
        stream
            .shutdown(std::net::Shutdown::Both)
            .map_err(|error| error.to_string())?;
        Ok(echoed)
    })
}

/// Sends `count` UDP datagrams from `netns` to `target`, `gap` apart, and collects the
/// replies (source address and payload) that arrive.
pub fn udp_exchange(
    netns: &Netns,
    target: SocketAddr,
    count: usize,
    gap: Duration,
) -> Vec<(SocketAddr, String)> {
    udp_exchange_from(netns, 0, target, count, gap)
}

/// As [`udp_exchange`], from UDP port `local_port` (0: any), so that two exchanges are one
/// flow.
pub fn udp_exchange_from(
    netns: &Netns,
    local_port: u16,
    target: SocketAddr,
    count: usize,
    gap: Duration,
) -> Vec<(SocketAddr, String)> {
    netns.within(move || {
        let any = if target.is_ipv6() { "::" } else { "0.0.0.0" };
        let socket = UdpSocket::bind((any, local_port)).expect("bind the UDP client");
        socket
            .set_read_timeout(Some(Duration::from_millis(2)))
            .expect("timeout");
        let mut replies = Vec::new();
        let mut buffer = [0u8; 2048];
        for sequence in 0..count {
            let _ = socket.send_to(format!("{sequence}").as_bytes(), target);
            let deadline = std::time::Instant::now() + gap;
            while std::time::Instant::now() < deadline {
                if let Ok((read, peer)) = socket.recv_from(&mut buffer) {
                    replies.push((peer, String::from_utf8_lossy(&buffer[..read]).into_owned()));
                }
            }
        }
        let deadline = std::time::Instant::now() + Duration::from_millis(300);
        while std::time::Instant::now() < deadline {
            if let Ok((read, peer)) = socket.recv_from(&mut buffer) {
                replies.push((peer, String::from_utf8_lossy(&buffer[..read]).into_owned()));
            }
        }
        replies
    })
}
