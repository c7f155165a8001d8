//! The contract of the persistent backends (design rule 2): for any sequence of opens, closes,
//! number reuse, dups, readiness changes and event-mask changes, they answer `get_revents`
//! exactly as the poll(2) backend (the C helper's loop) does, every iteration.
//!
//! Four backends run in lockstep: poll(2), epoll, io_uring, and the kqueue backend's own code over the
//! model of FreeBSD's kqueue (`src/poller/kqueue_model.rs`). One difference is kqueue's and
//! is allowed: a socket asked for HUP but not OUT has only its EVFILT_READ knote enabled, and
//! EV_EOF on it cannot tell a half close from a full one, so kqueue never says HUP there
//! (libslirp asks HUP only together with IN, and an end of file is IN too).

#![cfg(target_os = "linux")]

mod common;

use common::Rng;
use slirp_helper::poller::{Poller, PollerKind, Readiness, Slot};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// One socket libslirp would own: our end, the peer that drives its readiness, and the
/// events libslirp currently asks for.
struct Sock {
    ours: UnixStream,
    peer: Option<UnixStream>,
    events: Readiness,
}

const IN: Readiness = Readiness::IN;
const OUT: Readiness = Readiness::OUT;
const MASKS: [Readiness; 6] = [
    IN,
    OUT,
    IN.union(OUT),
    IN.union(Readiness::HUP),
    IN.union(Readiness::PRI),
    IN.union(OUT).union(Readiness::ERR).union(Readiness::HUP),
];

/// Answers per fd, with what was asked for it.
type Answers = BTreeMap<RawFd, (Readiness, Readiness)>;

/// What a backend's answer must equal poll(2)'s in: everything, but for kqueue HUP where it
/// was asked without OUT (see the top of this file).
fn comparable(kind: PollerKind, answers: &Answers) -> BTreeMap<RawFd, Readiness> {
    answers
        .iter()
        .map(|(&fd, &(asked, answer))| {
            let blind = kind == PollerKind::Kqueue
                && asked.contains(Readiness::HUP)
                && !asked.contains(OUT);
            (
                fd,
                if blind {
                    answer & !Readiness::HUP
                } else {
                    answer
                },
            )
        })
        .collect()
}

struct Scenario {
    rng: Rng,
    socks: BTreeMap<RawFd, Sock>,
    /// Numbers closed without the unregister hint: libslirp gives at least one of the two hints
    /// around every reuse of a number (the open side when the close side was silent), which
    /// is what lets a persistent backend tell a new file from the old one.
    closed_silently: Vec<RawFd>,
    /// Duplicates that keep an old file (and its epoll registration) alive after its number
    /// was closed and reused.
    dups: Vec<OwnedFd>,
    pollers: Vec<Poller>,
}

impl Scenario {
    fn hint_opened(&mut self, fd: RawFd) {
        for p in &mut self.pollers {
            p.opened(fd);
        }
    }

    fn hint_closing(&mut self, fd: RawFd) {
        for p in &mut self.pollers {
            p.closing(fd);
        }
    }

    /// A new socket; its number.
    fn open(&mut self) -> RawFd {
        let (ours, peer) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        peer.set_nonblocking(true).unwrap();
        let fd = ours.as_raw_fd();
        // libslirp gives the register hint on most but not all open paths.
        let reused_silently = self.closed_silently.contains(&fd);
        self.closed_silently.retain(|&f| f != fd);
        if reused_silently || self.rng.index(4) != 0 {
            self.hint_opened(fd);
        }
        let events = MASKS[self.rng.index(MASKS.len())];
        self.socks.insert(
            fd,
            Sock {
                ours,
                peer: Some(peer),
                events,
            },
        );
        fd
    }

    fn pick(&mut self) -> Option<RawFd> {
        if self.socks.is_empty() {
            return None;
        }
        let i = self.rng.index(self.socks.len());
        self.socks.keys().nth(i).copied()
    }

    fn step(&mut self) {
        let Some(fd) = self.pick() else {
            self.open();
            return;
        };
        match self.rng.index(10) {
            0 | 1 => {
                self.open();
            }
            2 => {
                // Close with the unregister hint (the usual path).
                self.hint_closing(fd);
                self.socks.remove(&fd);
            }
            3 => {
                // Close without the hint (libslirp's unbalanced paths).
                self.socks.remove(&fd);
                self.closed_silently.push(fd);
            }
            4 => {
                // Keep the file alive through a dup, then close the number: epoll's stale
                // registration case.
                let sock = self.socks.remove(&fd).unwrap();
                if self.dups.len() < 8 {
                    self.dups
                        .push(OwnedFd::from(sock.ours.try_clone().unwrap()));
                }
                if self.rng.index(2) == 0 {
                    self.hint_closing(fd);
                } else {
                    self.closed_silently.push(fd);
                }
            }
            5 => {
                let sock = self.socks.get_mut(&fd).unwrap();
                if let Some(peer) = &mut sock.peer {
                    let _ = peer.write(&[7; 100]);
                }
            }
            6 => {
                let mut buf = [0u8; 4096];
                let _ = self.socks.get_mut(&fd).unwrap().ours.read(&mut buf);
            }
            7 => {
                // Peer goes away: HUP (and IN for EOF) appear.
                self.socks.get_mut(&fd).unwrap().peer = None;
            }
            8 => {
                // Fill our send buffer until OUT goes away.
                let sock = self.socks.get_mut(&fd).unwrap();
                let chunk = [1u8; 65536];
                for _ in 0..64 {
                    if sock.ours.write(&chunk).is_err() {
                        break;
                    }
                }
            }
            _ => {
                let events = MASKS[self.rng.index(MASKS.len())];
                self.socks.get_mut(&fd).unwrap().events = events;
            }
        }
    }

    /// `add` on every poller; the slots each returned.
    fn add(&mut self, idx: &mut [Vec<(RawFd, Readiness, Slot)>], fd: RawFd, events: Readiness) {
        for (p, idx) in self.pollers.iter_mut().zip(idx.iter_mut()) {
            idx.push((fd, events, p.add(fd, events).expect("a valid fd")));
        }
    }

    /// One iteration through every poller, filled in lockstep; the answers must agree.
    fn iterate_and_compare(&mut self, seed: u64, iteration: usize) {
        let mut idx: Vec<Vec<(RawFd, Readiness, Slot)>> = vec![Vec::new(); self.pollers.len()];
        for p in &mut self.pollers {
            p.begin_fill();
        }
        let fds: Vec<RawFd> = self.socks.keys().copied().collect();
        // Sockets opened during this fill, asked for at its end (a number may come back).
        let mut opened_in_fill: Vec<RawFd> = Vec::new();
        for fd in fds {
            if opened_in_fill.contains(&fd) || !self.socks.contains_key(&fd) {
                continue;
            }
            let events = self.socks[&fd].events;
            match self.rng.index(24) {
                // libslirp skips some sockets in some iterations (e.g. not yet connected, or
                // flow control): the persistent backends delete, then add again later.
                0..=2 => {}
                3 => {
                    // One fd asked for twice with different events: poll(2) watches both
                    // entries, the persistent backends the union.
                    let first = events & MASKS[self.rng.index(MASKS.len())];
                    let second = events & !first;
                    for part in [first, second] {
                        if !part.is_empty() {
                            self.add(&mut idx, fd, part);
                        }
                    }
                }
                4 => {
                    // The fill itself closes an expired socket (udp_detach) before asking for
                    // it, and a socket opened later may get the number.
                    self.hint_closing(fd);
                    self.socks.remove(&fd);
                    opened_in_fill.push(self.open());
                }
                5 => {
                    // Asked for, then closed with the hint before the wait: libslirp no longer
                    // asks its answer (the socket is gone); the number may be asked for again.
                    self.add(&mut idx, fd, events);
                    self.hint_closing(fd);
                    self.socks.remove(&fd);
                    for idx in &mut idx {
                        idx.retain(|&(f, _, _)| f != fd);
                    }
                    opened_in_fill.push(self.open());
                }
                _ => self.add(&mut idx, fd, events),
            }
        }
        for fd in opened_in_fill {
            if let Some(sock) = self.socks.get(&fd) {
                let events = sock.events;
                self.add(&mut idx, fd, events);
            }
        }
        let mut answers: Vec<Answers> = Vec::new();
        for (p, idx) in self.pollers.iter_mut().zip(&idx) {
            p.wait(0).unwrap();
            let mut by_fd = Answers::new();
            for &(fd, asked, slot) in idx {
                let entry = by_fd.entry(fd).or_default();
                entry.0 |= asked;
                entry.1 |= p.revents(slot);
            }
            answers.push(by_fd);
        }
        let kinds: Vec<_> = self.pollers.iter().map(|p| p.kind()).collect();
        for (k, other) in answers.iter().enumerate().skip(1) {
            assert_eq!(
                comparable(kinds[k], &answers[0]),
                comparable(kinds[k], other),
                "seed {seed} iteration {iteration}: {} and {} disagree",
                kinds[0].name(),
                kinds[k].name()
            );
            // The event loop skips libslirp's socket walk on this answer: it must be exact.
            assert_eq!(
                self.pollers[k].slirp_sockets_ready(),
                other.values().any(|&(_, a)| !a.is_empty()),
                "seed {seed} iteration {iteration}: {} says {} for {other:?}",
                kinds[k].name(),
                self.pollers[k].slirp_sockets_ready()
            );
        }
    }
}

/// `iterations` iterations of up to `max_steps` fd lifecycle steps each, through poll, epoll,
/// the kqueue backend over the model and io_uring.
fn run(seed: u64, iterations: usize, max_steps: usize) {
    let (wake_r, _wake_w) = nix::unistd::pipe().unwrap();
    let (front, _front_peer) = UnixStream::pair().unwrap();
    let (wake, front) = (wake_r.as_fd(), front.as_fd());
    let pollers = vec![
        Poller::new(PollerKind::Poll, wake, front).unwrap(),
        Poller::new(PollerKind::Epoll, wake, front).unwrap(),
        Poller::kqueue_over_model(wake, front),
        Poller::new(PollerKind::IoUring, wake, front).unwrap(),
    ];
    // A kernel without io_uring makes the last one epoll (the fallback): then this run does
    // not test the engine, and says so.
    if fell_back_to_epoll(&pollers[3]) {
        return;
    }
    let mut s = Scenario {
        rng: Rng(seed),
        socks: BTreeMap::new(),
        closed_silently: Vec::new(),
        dups: Vec::new(),
        pollers,
    };
    for iteration in 0..iterations {
        for _ in 0..1 + s.rng.index(max_steps) {
            s.step();
        }
        s.iterate_and_compare(seed, iteration);
    }
    for p in &s.pollers[1..] {
        let counters = p.interest_counters().unwrap();
        assert!(
            counters.adds > 0 && counters.deletes > 0 && counters.modifies > 0,
            "{}: {counters:?}",
            p.kind().name()
        );
    }
}

fn fell_back_to_epoll(p: &Poller) -> bool {
    let fell_back = p.kind() != PollerKind::IoUring;
    if fell_back {
        common::skip::skip(
            "poller_equivalence",
            "io_uring is not available: the engine fell back to epoll",
        );
    }
    fell_back
}

/// Descriptor numbers are the process's: the two tests below, run on parallel threads, would
/// take each other's freed numbers, while each one's reuse bookkeeping (`closed_silently`)
/// assumes it alone opens and closes descriptors. One CI run (seed 7, iteration 132) saw epoll
/// report IN where poll reported nothing for such a number; they run one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn epoll_and_kqueue_answer_as_poll_does_for_random_fd_lifecycles() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for seed in [1, 2, 3, 0x5eed, 0xdead_beef] {
        run(seed, 1500, 4);
    }
}

/// Many opens, closes (with and without hints) and number reuses between two waits.
#[test]
fn epoll_and_kqueue_answer_as_poll_does_through_an_fd_reuse_storm() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for seed in [7, 0x570f_u64] {
        run(seed, 300, 40);
    }
}
