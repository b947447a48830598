//! One UDX stream as a sans-I/O state machine: packets and time in, packets and events
//! out. No sockets, no tasks, no clock of its own: the caller passes `now` everywhere,
//! so loss recovery, pacing and congestion control run on a virtual clock in tests.
//!
//! Sequence numbers count packets (as in the C libudx), not bytes. Every DATA or END
//! packet takes one; ACKs, heartbeats and DESTROY take none. The send side keeps
//! unacknowledged bytes in one ring buffer that packets index by offset, so sending,
//! acknowledging and retransmitting cost O(1) per packet and allocate nothing.
//!
//! Loss detection is RACK (RFC 8985): a packet is lost only when one sent after it has
//! been delivered and a reordering window has passed. Tail-loss probes (RFC 8985 §7)
//! recover a lost last packet in about two round trips; the RTO (RFC 6298, with
//! exponential backoff) is the last resort, and six timeouts of the same packet end the
//! stream as the C libudx does.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::cubic::Cubic;
use crate::packet::{self, Header, Packet, FLAG_DATA, FLAG_DESTROY, FLAG_END, FLAG_HEARTBEAT, FLAG_MESSAGE, FLAG_SACK};
use crate::pacer::Pacer;
use crate::rtt::{RttEstimator, MAX_RTO};
use crate::seq;

/// Default receive buffer (the window advertised when empty), as the C libudx.
pub const DEFAULT_RECV_WINDOW: u32 = 4 << 20;
/// Default bound on bytes written but not yet acknowledged: writes beyond it wait.
pub const DEFAULT_SEND_BUFFER: usize = 1 << 20;
/// Out-of-order packets kept at most (4 MiB of 1152-byte packets is 3641).
const MAX_OUT_OF_ORDER: usize = 4096;
/// Unreliable messages queued for the reader at most; more are dropped.
const MAX_QUEUED_MESSAGES: usize = 256;
/// Timeouts of one packet before the stream gives up (as the C libudx).
const MAX_RTO_TIMEOUTS: u8 = 6;
const MTU_BASE: usize = 1200;
const MTU_MAX: usize = 1500;
const MTU_STEP: usize = 32;
const MTU_MAX_PROBES: u8 = 3;
/// Tail-loss probe timeout floor: the peer ACKs at once, but timers tick in ms.
const TLP_MIN: Duration = Duration::from_millis(2);

#[derive(Debug, Clone)]
pub struct Config {
    pub recv_window: u32,
    pub send_buffer: usize,
    /// The peer is reached over IPv6 (larger headers per packet).
    pub ipv6: bool,
    /// Hold a partly filled last packet until `push` (a flush): a writer that writes a
    /// frame header and its body separately then sends one packet, not two.
    pub cork: bool,
    /// Unacknowledged data this old means the peer is gone (as TCP_USER_TIMEOUT); `None`
    /// leaves it to the retransmission limit alone.
    pub user_timeout: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Self { recv_window: DEFAULT_RECV_WINDOW, send_buffer: DEFAULT_SEND_BUFFER, ipv6: false, cork: false, user_timeout: None }
    }
}

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Both sides ended and every byte was acknowledged.
    Done,
    /// The peer sent DESTROY.
    Reset,
    /// A packet went unacknowledged through every retransmission timeout.
    TimedOut,
    /// Destroyed locally.
    Destroyed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PktState {
    InFlight,
    Lost,
    Acked,
}

#[derive(Debug, Clone)]
struct Sent {
    offset: u64,
    len: u16,
    flags: u8,
    /// MTU probe padding carried in `data_offset` (0 = not a probe).
    padding: u8,
    time_sent: Instant,
    transmits: u8,
    retransmitted: bool,
    state: PktState,
    /// Delivered by a SACK (counted in `sacked_in_flight` until cumulatively acked).
    sacked: bool,
    rto_timeouts: u8,
}

impl Sent {
    fn wire_size(&self) -> usize {
        packet::HEADER_SIZE + self.padding as usize + self.len as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LossTimer {
    Rto,
    Tlp,
    Reorder,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MtuState {
    Base,
    Search,
    Complete,
}

struct OutOfOrder {
    flags: u8,
    data: Vec<u8>,
}

/// What the stream wants its owner to do after an input (wake readers/writers).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Wakeups {
    pub readable: bool,
    pub writable: bool,
}

pub struct Conn {
    cfg: Config,
    remote_id: u32,
    closed: Option<CloseReason>,
    destroy_pending: bool,

    // --- send side ---
    /// Next sequence number to assign.
    seq: u32,
    /// Lowest sequence not cumulatively acknowledged.
    remote_acked: u32,
    /// Packets `remote_acked..seq`, in sequence order.
    sent: VecDeque<Sent>,
    /// Unacknowledged and unsent bytes; `send_buf[0]` is stream offset `send_base`.
    send_buf: VecDeque<u8>,
    send_base: u64,
    /// Offset of the first byte not yet in a packet.
    unsent_offset: u64,
    /// With `cork`, bytes before this offset go out even in a partly filled packet.
    push_offset: u64,
    /// Last time the peer acknowledged something new while data was outstanding.
    last_progress: Instant,
    end_queued: bool,
    end_sent: bool,
    /// Our END was acknowledged.
    local_ended: bool,
    inflight_bytes: usize,
    /// In-flight packets in send-time order, as (seq, transmits); stale entries are
    /// skipped lazily, which keeps RACK's scan amortised O(1) per packet.
    send_order: VecDeque<(u32, u8)>,
    /// Packets declared lost, to resend (stale entries skipped lazily).
    lost_queue: VecDeque<u32>,
    sacked_in_flight: u32,
    send_rwnd: u32,
    wl1: u32,
    wl2: u32,
    cwnd_limited: bool,

    rtt: RttEstimator,
    rto_backoff: u32,
    loss_timer: Option<(Instant, LossTimer)>,
    zwp_timer: Option<Instant>,
    heartbeat_pending: bool,
    /// Send one packet regardless of window and pacing (a tail-loss probe).
    probe_pending: bool,

    rack_time_sent: Option<Instant>,
    rack_next_seq: u32,
    rack_rtt: Duration,
    rack_fack: u32,
    reordering_seen: bool,
    in_recovery: bool,
    /// The recovery began with an RTO: the window slow-starts back (RFC 5681 §3.1),
    /// where fast recovery holds it.
    rto_recovery: bool,
    recovery_point: u32,
    tlp_in_flight: bool,
    tlp_is_retrans: bool,
    tlp_end_seq: u32,
    tlp_permitted: bool,

    cc: Cubic,
    pacer: Pacer,
    /// Set when the pacer (not the window) held a packet back: when to try again.
    pacing_wait: Option<Instant>,

    mtu: usize,
    mtu_state: MtuState,
    mtu_probe_size: usize,
    mtu_probe_count: u8,
    mtu_probe_wanted: bool,

    // --- receive side ---
    /// Next sequence expected from the peer.
    ack: u32,
    recv_buf: VecDeque<u8>,
    /// Slot i holds sequence `ack + i` (slot 0, the missing one, is always empty).
    ooo: VecDeque<Option<OutOfOrder>>,
    ooo_count: usize,
    ooo_bytes: usize,
    spare_bufs: Vec<Vec<u8>>,
    remote_end_seq: Option<u32>,
    remote_ended: bool,
    ack_pending: bool,
    last_advertised_window: u32,
    messages: VecDeque<Vec<u8>>,

    stats: Stats,
}

/// Counters for tests, benchmarks and the owner's metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub packets_sent: u64,
    pub retransmits: u64,
    pub rto_count: u64,
    pub tlp_count: u64,
    pub fast_recoveries: u64,
    pub dropped_sacks: u64,
    pub dropped_packets: u64,
}

impl Conn {
    pub fn new(now: Instant, remote_id: u32, cfg: Config) -> Self {
        let mtu = MTU_BASE;
        let mss = mtu - if cfg.ipv6 { packet::IPV6_OVERHEAD } else { packet::IPV4_OVERHEAD };
        Self {
            remote_id,
            closed: None,
            destroy_pending: false,
            seq: 0,
            remote_acked: 0,
            sent: VecDeque::new(),
            send_buf: VecDeque::new(),
            send_base: 0,
            unsent_offset: 0,
            push_offset: 0,
            last_progress: now,
            end_queued: false,
            end_sent: false,
            local_ended: false,
            inflight_bytes: 0,
            send_order: VecDeque::new(),
            lost_queue: VecDeque::new(),
            sacked_in_flight: 0,
            send_rwnd: DEFAULT_RECV_WINDOW,
            wl1: 0,
            wl2: 0,
            cwnd_limited: false,
            rtt: RttEstimator::default(),
            rto_backoff: 0,
            loss_timer: None,
            zwp_timer: None,
            heartbeat_pending: false,
            probe_pending: false,
            rack_time_sent: None,
            rack_next_seq: 0,
            rack_rtt: Duration::ZERO,
            rack_fack: 0,
            reordering_seen: false,
            in_recovery: false,
            rto_recovery: false,
            recovery_point: 0,
            tlp_in_flight: false,
            tlp_is_retrans: false,
            tlp_end_seq: 0,
            tlp_permitted: true,
            cc: Cubic::new(mss),
            pacer: Pacer::new(now),
            pacing_wait: None,
            mtu,
            mtu_state: MtuState::Base,
            mtu_probe_size: MTU_BASE + MTU_STEP,
            mtu_probe_count: 0,
            mtu_probe_wanted: false,
            ack: 0,
            recv_buf: VecDeque::new(),
            ooo: VecDeque::new(),
            ooo_count: 0,
            ooo_bytes: 0,
            spare_bufs: Vec::new(),
            remote_end_seq: None,
            remote_ended: false,
            ack_pending: false,
            last_advertised_window: cfg.recv_window,
            messages: VecDeque::new(),
            stats: Stats::default(),
            cfg,
        }
    }

    // ----- queries -----

    pub fn remote_id(&self) -> u32 {
        self.remote_id
    }

    /// Retargets the stream at another remote stream id (a relay or a changed path).
    pub fn set_remote_id(&mut self, id: u32) {
        self.remote_id = id;
    }

    pub fn closed(&self) -> Option<CloseReason> {
        self.closed
    }

    /// Nothing more will leave this stream: closed and its last packet sent.
    pub fn is_drained(&self) -> bool {
        self.closed.is_some() && !self.destroy_pending && !self.ack_pending
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    pub fn mtu(&self) -> usize {
        self.mtu
    }

    pub fn srtt(&self) -> Option<Duration> {
        self.rtt.srtt()
    }

    pub fn cwnd(&self) -> u64 {
        self.cc.window()
    }

    fn max_payload(&self) -> usize {
        self.mtu - if self.cfg.ipv6 { packet::IPV6_OVERHEAD } else { packet::IPV4_OVERHEAD }
    }

    /// Bytes written and not yet acknowledged (what bounds further writes).
    pub fn buffered_bytes(&self) -> usize {
        self.send_buf.len()
    }

    /// Every written byte (and the END, if queued) is acknowledged.
    pub fn all_acked(&self) -> bool {
        self.send_buf.is_empty() && self.sent.is_empty() && (!self.end_queued || self.local_ended)
    }

    pub fn local_ended(&self) -> bool {
        self.local_ended
    }

    /// The peer's END has been reached: no more data will arrive.
    pub fn remote_ended(&self) -> bool {
        self.remote_ended
    }

    // ----- application side -----

    /// Queues bytes to send; returns how many fit under the send buffer bound.
    pub fn write(&mut self, data: &[u8]) -> usize {
        if self.closed.is_some() || self.end_queued {
            return 0;
        }
        let room = self.cfg.send_buffer.saturating_sub(self.send_buf.len());
        let n = room.min(data.len());
        self.send_buf.extend(&data[..n]);
        n
    }

    /// Queues the END: sent after every written byte.
    pub fn end(&mut self) {
        if self.closed.is_none() {
            self.end_queued = true;
            self.push();
        }
    }

    /// Lets every byte written so far go out, a partly filled last packet included.
    pub fn push(&mut self) {
        self.push_offset = self.send_base + self.send_buf.len() as u64;
    }

    /// Copies in-order received bytes into `out`.
    pub fn read(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.recv_buf.len());
        let (a, b) = self.recv_buf.as_slices();
        let from_a = n.min(a.len());
        out[..from_a].copy_from_slice(&a[..from_a]);
        out[from_a..n].copy_from_slice(&b[..n - from_a]);
        self.recv_buf.drain(..n);
        // The window reopened from nearly shut: tell the sender rather than wait for its
        // zero-window probe.
        let window = self.recv_window();
        if n > 0 && self.last_advertised_window < self.cfg.recv_window / 4 && window >= self.cfg.recv_window / 2 {
            self.ack_pending = true;
        }
        n
    }

    /// An ACK (or window update) is waiting to be sent.
    pub fn has_pending_ack(&self) -> bool {
        self.ack_pending
    }

    pub fn readable_bytes(&self) -> usize {
        self.recv_buf.len()
    }

    /// End of stream for the reader: the peer ended and everything was read.
    pub fn read_eof(&self) -> bool {
        self.recv_buf.is_empty() && (self.remote_ended || self.closed.is_some())
    }

    pub fn take_message(&mut self) -> Option<Vec<u8>> {
        self.messages.pop_front()
    }

    /// Ends the stream at once and tells the peer (a DESTROY packet).
    pub fn destroy(&mut self) {
        if self.closed.is_none() {
            self.close(CloseReason::Destroyed);
            self.destroy_pending = true;
        }
    }

    fn close(&mut self, reason: CloseReason) {
        self.closed = Some(reason);
        self.loss_timer = None;
        self.zwp_timer = None;
        self.probe_pending = false;
        self.heartbeat_pending = false;
        if reason != CloseReason::Done {
            self.ack_pending = false;
        }
    }

    fn recv_window(&self) -> u32 {
        let used = self.recv_buf.len() + self.ooo_bytes;
        (self.cfg.recv_window as usize).saturating_sub(used) as u32
    }

    // ----- network side: input -----

    /// Handles one datagram addressed to this stream.
    pub fn handle_packet(&mut self, now: Instant, pkt: &Packet<'_>) -> Wakeups {
        let mut wake = Wakeups::default();
        if self.closed.is_some() {
            // Time-wait: the peer may not have our last ACK (of its END) and resends.
            // Answer it, or it retransmits into silence and times out.
            if self.closed == Some(CloseReason::Done) && pkt.header.flags & (FLAG_DATA | FLAG_END) != 0 {
                self.ack_pending = true;
            }
            return wake;
        }
        let h = pkt.header;
        if h.flags & FLAG_HEARTBEAT != 0 {
            self.ack_pending = true;
            return wake;
        }
        let Some(payload) = pkt.payload else { return wake };

        if seq::le(self.ack, h.seq) {
            if h.flags & (FLAG_DATA | FLAG_END) != 0 && !self.remote_ended {
                wake.readable |= self.on_data(h.seq, h.flags, payload);
            }
            if h.flags & FLAG_END != 0 && self.remote_end_seq.is_none() {
                self.remote_end_seq = Some(h.seq);
            }
            if h.flags & FLAG_DESTROY != 0 {
                self.close(CloseReason::Reset);
                return Wakeups { readable: true, writable: true };
            }
        }
        if h.flags & FLAG_MESSAGE != 0 && self.messages.len() < MAX_QUEUED_MESSAGES {
            self.messages.push_back(payload.to_vec());
            wake.readable = true;
        }
        if let Some(end) = self.remote_end_seq {
            if !self.remote_ended && seq::gt(self.ack, end) {
                self.remote_ended = true;
                wake.readable = true;
            }
        }
        if h.flags & (FLAG_DATA | FLAG_END) != 0 {
            // Every data packet is acknowledged (as the C libudx does); the owner sends the
            // ACK after its receive batch, or a data packet carries it.
            self.ack_pending = true;
        }

        self.on_ack_fields(now, &h, pkt, &mut wake);
        if self.closed.is_none() && self.local_ended && self.remote_ended {
            self.close(CloseReason::Done);
        }
        wake
    }

    /// Stores a DATA/END packet; returns whether in-order bytes became readable.
    fn on_data(&mut self, seq_no: u32, flags: u8, payload: &[u8]) -> bool {
        let index = seq_no.wrapping_sub(self.ack) as usize;
        if index == 0 {
            if flags & FLAG_DATA != 0 {
                if self.recv_buf.len() + payload.len() > self.cfg.recv_window as usize + self.max_payload() {
                    // The peer ignores our window: drop, it will resend once we are read.
                    self.stats.dropped_packets += 1;
                    return false;
                }
                self.recv_buf.extend(payload);
            }
            self.ack = self.ack.wrapping_add(1);
            self.ooo.pop_front();
            self.drain_out_of_order();
            return true;
        }
        if index >= MAX_OUT_OF_ORDER || self.ooo_bytes + payload.len() > self.cfg.recv_window as usize {
            self.stats.dropped_packets += 1;
            return false;
        }
        if self.ooo.len() <= index {
            self.ooo.resize_with(index + 1, || None);
        }
        if self.ooo[index].is_none() {
            let mut data = self.spare_bufs.pop().unwrap_or_default();
            data.clear();
            data.extend_from_slice(payload);
            self.ooo_bytes += data.len();
            self.ooo_count += 1;
            self.ooo[index] = Some(OutOfOrder { flags, data });
        }
        false
    }

    fn drain_out_of_order(&mut self) {
        // Slot 0 is `ack`: while it is present it is the next in order.
        while let Some(Some(_)) = self.ooo.front() {
            let Some(Some(slot)) = self.ooo.pop_front() else { break };
            self.ooo_count -= 1;
            self.ooo_bytes -= slot.data.len();
            if slot.flags & FLAG_DATA != 0 {
                self.recv_buf.extend(&slot.data);
            }
            self.ack = self.ack.wrapping_add(1);
            if self.spare_bufs.len() < 64 {
                self.spare_bufs.push(slot.data);
            }
        }
        if self.ooo_count == 0 {
            self.ooo.clear();
        }
    }

    fn on_ack_fields(&mut self, now: Instant, h: &Header, pkt: &Packet<'_>, wake: &mut Wakeups) {
        // An ACK of something never sent is forged or garbled: ignore the ACK part.
        if seq::lt(self.seq, h.ack) {
            return;
        }
        if seq::ge(h.ack, self.remote_acked)
            && (seq::lt(self.wl1, h.seq) || (self.wl1 == h.seq && seq::le(self.wl2, h.ack)))
        {
            if h.recv_window > 0 && self.zwp_timer.is_some() {
                self.zwp_timer = None;
            }
            self.send_rwnd = h.recv_window;
            self.wl1 = h.seq;
            self.wl2 = h.ack;
        }
        if self.tlp_in_flight && seq::ge(h.ack, self.tlp_end_seq.wrapping_add(1)) {
            self.tlp_in_flight = false;
        }
        if self.in_recovery && seq::gt(h.ack, self.recovery_point) {
            self.in_recovery = false;
        }

        let prior_acked = self.remote_acked;
        let data_in_flight = self.remote_acked != self.seq;
        let inflight_before = self.inflight_bytes;
        let mut delivered: u64 = 0;
        let mut p = prior_acked;
        while seq::lt(p, h.ack) {
            delivered += self.ack_packet(now, p, false);
            p = p.wrapping_add(1);
        }
        let ack_advanced = seq::gt(h.ack, prior_acked);
        if ack_advanced {
            self.remote_acked = h.ack;
            self.rto_backoff = 0;
            self.last_progress = now;
            self.release_acked();
            wake.writable = true;
        }
        for (start, end) in pkt.sack_blocks() {
            if self.sack_is_valid(start, end) {
                let mut p = start;
                while p != end {
                    delivered += self.ack_packet(now, p, true);
                    p = p.wrapping_add(1);
                }
            } else {
                self.stats.dropped_sacks += 1;
            }
        }

        let mut arm = ack_advanced && data_in_flight;
        if delivered > 0 {
            if self.remote_acked == self.seq {
                arm = false;
                self.loss_timer = None;
                if self.send_rwnd == 0 && (self.has_unsent() || (self.end_queued && !self.end_sent)) {
                    self.zwp_timer = Some(now + self.rtt.rto());
                }
            }
            if let Some(timeout) = self.rack_detect_loss(now) {
                self.loss_timer = Some((now + timeout, LossTimer::Reorder));
                arm = false;
            }
            if let Some(srtt) = self.rtt.srtt() {
                let limited = self.cwnd_limited || inflight_before as u64 * 2 >= self.cc.window();
                self.cc.on_ack(now, delivered, srtt, limited && (!self.in_recovery || self.rto_recovery));
                self.cwnd_limited = false;
                self.update_pacing(now);
            }
        }
        if arm && !self.schedule_tlp(now) {
            self.arm_rto(now);
        }
    }

    fn sack_is_valid(&self, start: u32, end: u32) -> bool {
        seq::le(end, self.seq) && seq::lt(start, end) && seq::lt(start, self.seq) && seq::ge(start, self.remote_acked)
    }

    /// Marks one packet delivered; returns its payload bytes if newly delivered.
    fn ack_packet(&mut self, now: Instant, seq_no: u32, by_sack: bool) -> u64 {
        let index = seq_no.wrapping_sub(self.remote_acked) as usize;
        let Some(pkt) = self.sent.get_mut(index) else { return 0 };
        if pkt.state == PktState::Acked {
            return 0;
        }
        if pkt.state == PktState::InFlight {
            self.inflight_bytes -= pkt.len as usize;
        }
        pkt.state = PktState::Acked;
        if by_sack {
            pkt.sacked = true;
            self.sacked_in_flight += 1;
        }
        let (time_sent, retransmitted, len, flags, padding) = (pkt.time_sent, pkt.retransmitted, pkt.len, pkt.flags, pkt.padding);
        let rtt = now.saturating_duration_since(time_sent);
        if !retransmitted {
            self.rtt.sample(now, rtt);
            self.tlp_permitted = true;
        }
        if !retransmitted || self.rtt.min_rtt().is_none_or(|min| rtt >= min) {
            self.rack_rtt = rtt;
            let next = seq_no.wrapping_add(1);
            if self.sent_after(time_sent, next, self.rack_time_sent, self.rack_next_seq) {
                self.rack_time_sent = Some(time_sent);
                self.rack_next_seq = next;
            }
        }
        let next = seq_no.wrapping_add(1);
        if seq::gt(next, self.rack_fack) {
            self.rack_fack = next;
        } else if seq::lt(next, self.rack_fack) && !retransmitted {
            self.reordering_seen = true;
        }
        if padding > 0 {
            self.on_mtu_probe_acked();
        }
        if self.mtu_state == MtuState::Base {
            self.mtu_state = MtuState::Search;
            self.mtu_probe_wanted = true;
        }
        if flags & FLAG_END != 0 {
            self.local_ended = true;
        }
        len as u64
    }

    fn sent_after(&self, t1: Instant, seq1: u32, t2: Option<Instant>, seq2: u32) -> bool {
        match t2 {
            None => true,
            Some(t2) => t1 > t2 || (t1 == t2 && seq::gt(seq1, seq2)),
        }
    }

    /// Drops cumulatively acknowledged packets and the bytes only they referenced.
    fn release_acked(&mut self) {
        while self.sent.len() > self.seq.wrapping_sub(self.remote_acked) as usize {
            if let Some(pkt) = self.sent.pop_front() {
                if pkt.state == PktState::InFlight {
                    self.inflight_bytes -= pkt.len as usize;
                }
                if pkt.sacked {
                    self.sacked_in_flight -= 1;
                }
            }
        }
        let keep_from = self.sent.front().map_or(self.unsent_offset, |p| p.offset);
        let drop = (keep_from - self.send_base) as usize;
        self.send_buf.drain(..drop.min(self.send_buf.len()));
        self.send_base += drop as u64;
    }

    // ----- loss detection -----

    fn reorder_window(&self) -> Duration {
        if !self.reordering_seen && (self.in_recovery || self.sacked_in_flight >= 3) {
            return Duration::ZERO;
        }
        let min = self.rtt.min_rtt().unwrap_or(Duration::ZERO) / 4;
        min.min(self.rtt.srtt().unwrap_or(Duration::ZERO))
    }

    fn entry_is_live(&self, seq_no: u32, transmits: u8) -> Option<&Sent> {
        if seq::lt(seq_no, self.remote_acked) || seq::ge(seq_no, self.seq) {
            return None;
        }
        let pkt = self.sent.get(seq_no.wrapping_sub(self.remote_acked) as usize)?;
        (pkt.state == PktState::InFlight && pkt.transmits == transmits).then_some(pkt)
    }

    /// RACK: marks packets lost that were sent before the latest delivered one and are
    /// older than an RTT plus the reordering window. Returns when to look again.
    fn rack_detect_loss(&mut self, now: Instant) -> Option<Duration> {
        let rack_time = self.rack_time_sent?;
        let reo = self.reorder_window();
        let mut lost = 0u32;
        let mut probes_lost = 0u32;
        let mut wait = None;
        while let Some(&(seq_no, transmits)) = self.send_order.front() {
            let Some(pkt) = self.entry_is_live(seq_no, transmits) else {
                self.send_order.pop_front();
                continue;
            };
            if pkt.time_sent > rack_time || !self.sent_after(rack_time, self.rack_next_seq, Some(pkt.time_sent), seq_no.wrapping_add(1)) {
                break;
            }
            let deadline = pkt.time_sent + self.rack_rtt + reo;
            if deadline > now {
                wait = Some(deadline - now);
                break;
            }
            self.send_order.pop_front();
            if self.mark_lost(seq_no) {
                probes_lost += 1;
            }
            lost += 1;
        }
        if lost > probes_lost && !self.in_recovery {
            self.in_recovery = true;
            self.rto_recovery = false;
            self.recovery_point = self.seq;
            self.tlp_in_flight = false;
            self.tlp_is_retrans = false;
            self.stats.fast_recoveries += 1;
            self.cc.on_congestion_event();
            self.update_pacing(now);
        }
        wait
    }

    /// Returns whether the lost packet was an MTU probe.
    fn mark_lost(&mut self, seq_no: u32) -> bool {
        let index = seq_no.wrapping_sub(self.remote_acked) as usize;
        let Some(pkt) = self.sent.get_mut(index) else { return false };
        if pkt.state != PktState::InFlight {
            return false;
        }
        pkt.state = PktState::Lost;
        self.inflight_bytes -= pkt.len as usize;
        self.lost_queue.push_back(seq_no);
        let was_probe = pkt.padding > 0;
        if was_probe {
            pkt.padding = 0;
            self.on_mtu_probe_lost();
        }
        was_probe
    }

    fn schedule_tlp(&mut self, now: Instant) -> bool {
        if self.remote_acked == self.seq || self.in_recovery || self.sacked_in_flight > 0 {
            return false;
        }
        let Some(srtt) = self.rtt.srtt() else { return false };
        let mut timeout = (srtt * 2).max(TLP_MIN);
        if self.sent.len() == 1 {
            timeout += TLP_MIN;
        }
        self.loss_timer = Some((now + timeout.min(self.current_rto()), LossTimer::Tlp));
        true
    }

    fn current_rto(&self) -> Duration {
        (self.rtt.rto() * 2u32.saturating_pow(self.rto_backoff)).min(MAX_RTO)
    }

    fn arm_rto(&mut self, now: Instant) {
        if self.remote_acked == self.seq {
            self.loss_timer = None;
            return;
        }
        let mut at = now + self.current_rto();
        if let Some(limit) = self.cfg.user_timeout {
            // The user timeout is checked when the RTO fires; a backed-off RTO must not
            // overshoot it.
            at = at.min((self.last_progress + limit).max(now));
        }
        self.loss_timer = Some((at, LossTimer::Rto));
    }

    fn on_tlp_timeout(&mut self, now: Instant) {
        if self.remote_acked == self.seq {
            self.loss_timer = None;
            return;
        }
        if self.tlp_in_flight || !self.tlp_permitted {
            self.arm_rto(now);
            return;
        }
        self.stats.tlp_count += 1;
        if self.has_unsent() || (self.end_queued && !self.end_sent) {
            // New data makes the best probe: poll_transmit sends it past the window.
            self.probe_pending = true;
            self.tlp_is_retrans = false;
            self.tlp_end_seq = self.seq;
        } else {
            let last = self.seq.wrapping_sub(1);
            if self.sent.back().is_none_or(|p| p.state != PktState::InFlight) {
                self.arm_rto(now);
                return;
            }
            self.mark_lost(last);
            // Resend it first, past the window.
            if let Some(pos) = self.lost_queue.iter().rposition(|&s| s == last) {
                self.lost_queue.remove(pos);
            }
            self.lost_queue.push_front(last);
            self.probe_pending = true;
            self.tlp_is_retrans = true;
            self.tlp_end_seq = last;
        }
        self.tlp_in_flight = true;
        self.tlp_permitted = false;
        self.arm_rto(now);
    }

    fn on_rto_timeout(&mut self, now: Instant) {
        if self.remote_acked == self.seq {
            self.loss_timer = None;
            return;
        }
        self.stats.rto_count += 1;
        self.in_recovery = true;
        self.rto_recovery = true;
        self.recovery_point = self.seq;
        self.tlp_in_flight = false;
        self.tlp_is_retrans = false;
        if self.cfg.user_timeout.is_some_and(|limit| now.saturating_duration_since(self.last_progress) >= limit) {
            self.close(CloseReason::TimedOut);
            return;
        }
        let reo = self.reorder_window();
        let first = self.remote_acked;
        self.lost_queue.clear();
        for i in 0..self.sent.len() {
            let seq_no = first.wrapping_add(i as u32);
            let pkt = &self.sent[i];
            match pkt.state {
                PktState::Acked => continue,
                PktState::Lost => self.lost_queue.push_back(seq_no),
                PktState::InFlight => {
                    if i == 0 || pkt.time_sent + self.rack_rtt + reo <= now {
                        if pkt.rto_timeouts >= MAX_RTO_TIMEOUTS {
                            self.close(CloseReason::TimedOut);
                            return;
                        }
                        self.sent[i].rto_timeouts += 1;
                        self.mark_lost(seq_no);
                    }
                }
            }
        }
        self.cc.on_rto();
        self.update_pacing(now);
        self.rto_backoff = self.rto_backoff.saturating_add(1);
        self.arm_rto(now);
    }

    // ----- MTU probing (as the C libudx: pad a full packet to the probe size) -----

    fn on_mtu_probe_acked(&mut self) {
        if self.mtu_state != MtuState::Search {
            return;
        }
        self.mtu_probe_count = 0;
        self.mtu = self.mtu_probe_size;
        self.cc.set_mss(self.max_payload());
        if self.mtu_probe_size >= MTU_MAX {
            self.mtu_state = MtuState::Complete;
        } else {
            self.mtu_probe_size = (self.mtu_probe_size + MTU_STEP).min(MTU_MAX);
            self.mtu_probe_wanted = true;
        }
    }

    fn on_mtu_probe_lost(&mut self) {
        if self.mtu_state != MtuState::Search {
            return;
        }
        if self.mtu_probe_count >= MTU_MAX_PROBES {
            self.mtu_state = MtuState::Complete;
        } else {
            self.mtu_probe_wanted = true;
        }
    }

    // ----- timers -----

    /// The earliest time `handle_timeout` has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed.is_some() {
            return None;
        }
        [self.loss_timer.map(|(t, _)| t), self.zwp_timer, self.pacing_wait].into_iter().flatten().min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed.is_some() {
            return;
        }
        if let Some((at, kind)) = self.loss_timer {
            if at <= now {
                self.loss_timer = None;
                match kind {
                    LossTimer::Rto => self.on_rto_timeout(now),
                    LossTimer::Tlp => self.on_tlp_timeout(now),
                    LossTimer::Reorder => {
                        match self.rack_detect_loss(now) {
                            Some(wait) => self.loss_timer = Some((now + wait, LossTimer::Reorder)),
                            None => self.arm_rto(now),
                        }
                    }
                }
            }
        }
        if let Some(at) = self.zwp_timer {
            if at <= now {
                // A window held shut is no progress either (as TCP_USER_TIMEOUT with
                // zero-window probes).
                if self.cfg.user_timeout.is_some_and(|limit| now.saturating_duration_since(self.last_progress) >= limit) {
                    self.close(CloseReason::TimedOut);
                    return;
                }
                self.heartbeat_pending = true;
                self.zwp_timer = Some(now + self.rtt.rto() * 2);
            }
        }
    }

    fn update_pacing(&mut self, now: Instant) {
        if let Some(srtt) = self.rtt.srtt() {
            self.pacer.set_rate(now, self.cc.pacing_rate(srtt), self.max_payload());
        }
    }

    // ----- network side: output -----

    fn has_unsent(&self) -> bool {
        self.unsent_offset < self.send_base + self.send_buf.len() as u64
    }

    fn header(&self, flags: u8, seq_no: u32) -> Header {
        Header {
            flags,
            data_offset: 0,
            stream_id: self.remote_id,
            recv_window: self.recv_window(),
            seq: seq_no,
            ack: self.ack,
        }
    }

    /// The header of an unreliable message (the caller sets `FLAG_MESSAGE`): takes no
    /// sequence number.
    pub fn message_header(&self) -> Header {
        self.header(0, self.seq)
    }

    /// Writes the next datagram to send into `out` (at least 1500 bytes) and returns its
    /// length, or `None` when nothing may be sent now.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        debug_assert!(out.len() >= MTU_MAX);
        if self.closed.is_some() {
            if self.destroy_pending {
                self.destroy_pending = false;
                return Some(self.write_control(FLAG_DESTROY, out));
            }
            if self.ack_pending && self.closed == Some(CloseReason::Done) {
                return Some(self.write_ack(out));
            }
            return None;
        }
        self.pacing_wait = None;
        if let Some(n) = self.transmit_retransmission(now, out) {
            return Some(n);
        }
        if let Some(n) = self.transmit_new(now, out) {
            return Some(n);
        }
        if self.ack_pending {
            return Some(self.write_ack(out));
        }
        if self.heartbeat_pending {
            self.heartbeat_pending = false;
            return Some(self.write_control(FLAG_HEARTBEAT, out));
        }
        None
    }

    fn transmit_retransmission(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        while let Some(&seq_no) = self.lost_queue.front() {
            let index = seq_no.wrapping_sub(self.remote_acked) as usize;
            let live = seq::ge(seq_no, self.remote_acked)
                && self.sent.get(index).is_some_and(|p| p.state == PktState::Lost);
            if !live {
                self.lost_queue.pop_front();
                continue;
            }
            let size = self.sent[index].wire_size();
            if !self.probe_pending {
                if self.inflight_bytes as u64 >= self.cc.window() {
                    self.cwnd_limited = true;
                    return None;
                }
                if !self.pacer.try_send(now, size) {
                    self.pacing_wait = self.pacer.next_send_time();
                    return None;
                }
            }
            self.probe_pending = false;
            self.lost_queue.pop_front();
            self.stats.retransmits += 1;
            let pkt = &mut self.sent[index];
            pkt.state = PktState::InFlight;
            pkt.retransmitted = true;
            pkt.transmits = pkt.transmits.wrapping_add(1);
            pkt.time_sent = now;
            let (offset, len, flags, transmits) = (pkt.offset, pkt.len, pkt.flags, pkt.transmits);
            self.inflight_bytes += len as usize;
            self.send_order.push_back((seq_no, transmits));
            let n = self.write_data(seq_no, flags, 0, offset, len as usize, out);
            if self.loss_timer.is_none() {
                self.arm_rto(now);
            }
            return Some(n);
        }
        None
    }

    fn transmit_new(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        let unsent = (self.send_base + self.send_buf.len() as u64 - self.unsent_offset) as usize;
        let end_due = self.end_queued && !self.end_sent;
        if unsent == 0 && !end_due {
            return None;
        }
        let max_payload = self.max_payload();
        let len = unsent.min(max_payload);
        if self.cfg.cork && len < max_payload && self.unsent_offset >= self.push_offset && !end_due {
            return None;
        }
        let mut padding = 0usize;
        if self.mtu_probe_wanted && len == max_payload && !self.probe_pending {
            let overhead = if self.cfg.ipv6 { packet::IPV6_OVERHEAD } else { packet::IPV4_OVERHEAD };
            let wanted = self.mtu_probe_size.saturating_sub(len + overhead);
            if wanted > 0 && wanted <= 255 {
                padding = wanted;
            }
        }
        let size = packet::HEADER_SIZE + padding + len;
        if !self.probe_pending {
            let window = self.cc.window().min(self.send_rwnd as u64);
            if self.inflight_bytes as u64 >= window {
                if self.send_rwnd == 0 && self.zwp_timer.is_none() && self.remote_acked == self.seq {
                    self.zwp_timer = Some(now + self.rtt.rto());
                }
                self.cwnd_limited = self.inflight_bytes as u64 >= self.cc.window();
                return None;
            }
            if !self.pacer.try_send(now, size) {
                self.pacing_wait = self.pacer.next_send_time();
                return None;
            }
        }
        let mut flags = if len > 0 { FLAG_DATA } else { 0 };
        if end_due && len == unsent {
            flags |= FLAG_END;
            self.end_sent = true;
        }
        let seq_no = self.seq;
        let offset = self.unsent_offset;
        self.unsent_offset += len as u64;
        self.seq = self.seq.wrapping_add(1);
        let was_idle = self.sent.is_empty() && self.loss_timer.is_none();
        if self.sent.is_empty() {
            // Measure the user timeout from when data went out, not from the last ACK.
            self.last_progress = now;
        }
        self.sent.push_back(Sent {
            offset,
            len: len as u16,
            flags,
            padding: padding as u8,
            time_sent: now,
            transmits: 1,
            retransmitted: false,
            state: PktState::InFlight,
            sacked: false,
            rto_timeouts: 0,
        });
        self.inflight_bytes += len;
        self.send_order.push_back((seq_no, 1));
        if padding > 0 {
            self.mtu_probe_wanted = false;
            self.mtu_probe_count += 1;
        }
        let was_probe = self.probe_pending;
        self.probe_pending = false;
        let n = self.write_data(seq_no, flags, padding, offset, len, out);
        if self.ooo_count == 0 {
            // The data packet's ack field carries everything a plain ACK would.
            self.ack_pending = false;
        }
        // RFC 8985 §7.2: each new transmission re-arms the probe timeout, but never over a
        // pending reordering timer.
        let reorder_pending = matches!(self.loss_timer, Some((_, LossTimer::Reorder)));
        let tlp_armed = !reorder_pending && !was_probe && self.schedule_tlp(now);
        if !tlp_armed && (was_idle || self.loss_timer.is_none()) {
            self.arm_rto(now);
        }
        Some(n)
    }

    fn write_data(&mut self, seq_no: u32, flags: u8, padding: usize, offset: u64, len: usize, out: &mut [u8]) -> usize {
        let mut header = self.header(flags, seq_no);
        header.data_offset = padding as u8;
        let mut h = [0u8; packet::HEADER_SIZE];
        header.encode(&mut h);
        out[..packet::HEADER_SIZE].copy_from_slice(&h);
        let body = packet::HEADER_SIZE + padding;
        out[packet::HEADER_SIZE..body].fill(0);
        let start = (offset - self.send_base) as usize;
        let (a, b) = self.send_buf.as_slices();
        let mut written = 0;
        if start < a.len() {
            let take = (a.len() - start).min(len);
            out[body..body + take].copy_from_slice(&a[start..start + take]);
            written = take;
        }
        if written < len {
            let from = start + written - a.len();
            out[body + written..body + len].copy_from_slice(&b[from..from + len - written]);
        }
        self.last_advertised_window = header.recv_window;
        self.stats.packets_sent += 1;
        body + len
    }

    fn write_ack(&mut self, out: &mut [u8]) -> usize {
        self.ack_pending = false;
        let mut n = packet::HEADER_SIZE;
        let mut blocks = 0;
        let mut i = 0;
        while i < self.ooo.len() && blocks < packet::MAX_SACK_BLOCKS {
            if self.ooo[i].is_none() {
                i += 1;
                continue;
            }
            let start = i;
            while i < self.ooo.len() && self.ooo[i].is_some() {
                i += 1;
            }
            let s = self.ack.wrapping_add(start as u32);
            let e = self.ack.wrapping_add(i as u32);
            out[n..n + 4].copy_from_slice(&s.to_le_bytes());
            out[n + 4..n + 8].copy_from_slice(&e.to_le_bytes());
            n += packet::SACK_BLOCK_SIZE;
            blocks += 1;
        }
        let header = self.header(if blocks > 0 { FLAG_SACK } else { 0 }, self.seq);
        let mut h = [0u8; packet::HEADER_SIZE];
        header.encode(&mut h);
        out[..packet::HEADER_SIZE].copy_from_slice(&h);
        self.last_advertised_window = header.recv_window;
        self.stats.packets_sent += 1;
        n
    }

    fn write_control(&mut self, flags: u8, out: &mut [u8]) -> usize {
        let header = self.header(flags, self.seq);
        let mut h = [0u8; packet::HEADER_SIZE];
        header.encode(&mut h);
        out[..packet::HEADER_SIZE].copy_from_slice(&h);
        self.stats.packets_sent += 1;
        packet::HEADER_SIZE
    }
}
