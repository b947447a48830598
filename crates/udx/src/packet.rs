//! The UDX wire format: a 20-byte little-endian header, then SACK blocks or padding
//! (`data_offset` bytes), then the payload. Parsed as the C libudx parses it.

/// Bytes in every UDX header.
pub const HEADER_SIZE: usize = 20;
pub const MAGIC: u8 = 0xFF;
pub const VERSION: u8 = 1;

pub const FLAG_DATA: u8 = 0b00_0001;
pub const FLAG_END: u8 = 0b00_0010;
pub const FLAG_SACK: u8 = 0b00_0100;
pub const FLAG_MESSAGE: u8 = 0b00_1000;
pub const FLAG_DESTROY: u8 = 0b01_0000;
pub const FLAG_HEARTBEAT: u8 = 0b10_0000;

/// At most this many SACK blocks go in one ACK (as the C libudx).
pub const MAX_SACK_BLOCKS: usize = 50;
/// One SACK block: start and end sequence, both u32 LE.
pub const SACK_BLOCK_SIZE: usize = 8;

/// IPv4 + UDP + UDX headers: what an MTU spends before the payload (IPv4).
pub const IPV4_OVERHEAD: usize = 20 + 8 + HEADER_SIZE;
/// IPv6 + UDP + UDX headers.
pub const IPV6_OVERHEAD: usize = 40 + 8 + HEADER_SIZE;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    pub flags: u8,
    pub data_offset: u8,
    /// The receiver's stream id (the sender's `remote_id`).
    pub stream_id: u32,
    /// Free space in the sender's receive buffer, in bytes.
    pub recv_window: u32,
    pub seq: u32,
    pub ack: u32,
}

impl Header {
    pub fn encode(&self, out: &mut [u8; HEADER_SIZE]) {
        out[0] = MAGIC;
        out[1] = VERSION;
        out[2] = self.flags;
        out[3] = self.data_offset;
        out[4..8].copy_from_slice(&self.stream_id.to_le_bytes());
        out[8..12].copy_from_slice(&self.recv_window.to_le_bytes());
        out[12..16].copy_from_slice(&self.seq.to_le_bytes());
        out[16..20].copy_from_slice(&self.ack.to_le_bytes());
    }

    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut out = [0; HEADER_SIZE];
        self.encode(&mut out);
        out
    }
}

/// The stream id of a datagram that looks like UDX, or `None` for anything else
/// (which then belongs to the socket's other user, the DHT).
pub fn peek_stream_id(datagram: &[u8]) -> Option<u32> {
    if datagram.len() < HEADER_SIZE || datagram[0] != MAGIC || datagram[1] != VERSION {
        return None;
    }
    Some(u32::from_le_bytes([datagram[4], datagram[5], datagram[6], datagram[7]]))
}

/// A parsed datagram, borrowing the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    pub header: Header,
    /// The SACK area (whole blocks only); empty unless `FLAG_SACK` is set.
    sacks: &'a [u8],
    /// Bytes after the header and `data_offset`; `None` when `data_offset` runs past
    /// the datagram (C drops such a packet after its header-level handling).
    pub payload: Option<&'a [u8]>,
}

impl<'a> Packet<'a> {
    pub fn parse(datagram: &'a [u8]) -> Option<Self> {
        peek_stream_id(datagram)?;
        let r = |i: usize| u32::from_le_bytes([datagram[i], datagram[i + 1], datagram[i + 2], datagram[i + 3]]);
        let header = Header {
            flags: datagram[2],
            data_offset: datagram[3],
            stream_id: r(4),
            recv_window: r(8),
            seq: r(12),
            ack: r(16),
        };
        let body = &datagram[HEADER_SIZE..];
        let offset = header.data_offset as usize;
        let sacks = if header.flags & FLAG_SACK != 0 {
            // The C libudx sends SACK blocks with data_offset 0 and reads "the rest of the
            // packet" as the SACK area unless data_offset marks a shorter one.
            let area = if offset > 0 && offset < body.len() { &body[..offset] } else { body };
            &area[..area.len() / SACK_BLOCK_SIZE * SACK_BLOCK_SIZE]
        } else {
            &[]
        };
        let payload = if offset > body.len() { None } else { Some(&body[offset..]) };
        Some(Self { header, sacks, payload })
    }

    /// `(start, end)` ranges, end exclusive, as the peer sent them (unvalidated).
    pub fn sack_blocks(&self) -> impl Iterator<Item = (u32, u32)> + 'a {
        self.sacks.chunks_exact(SACK_BLOCK_SIZE).map(|b| {
            (u32::from_le_bytes([b[0], b[1], b[2], b[3]]), u32::from_le_bytes([b[4], b[5], b[6], b[7]]))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_header_bytes() {
        // A DATA|END packet to stream 7, window 4 MiB, seq 258, ack 1 as the C libudx writes it.
        let h = Header { flags: FLAG_DATA | FLAG_END, data_offset: 0, stream_id: 7, recv_window: 4 << 20, seq: 258, ack: 1 };
        assert_eq!(
            h.to_bytes(),
            [0xff, 0x01, 0x03, 0x00, 7, 0, 0, 0, 0, 0, 0x40, 0, 0x02, 0x01, 0, 0, 1, 0, 0, 0]
        );
        let bytes = h.to_bytes();
        let p = Packet::parse(&bytes).unwrap();
        assert_eq!(p.header, h);
        assert_eq!(p.payload, Some(&[][..]));
    }

    #[test]
    fn sack_area_is_rest_of_packet_when_offset_is_zero() {
        let mut d = Header { flags: FLAG_SACK, ..Default::default() }.to_bytes().to_vec();
        for (s, e) in [(5u32, 7u32), (9, 12)] {
            d.extend_from_slice(&s.to_le_bytes());
            d.extend_from_slice(&e.to_le_bytes());
        }
        d.push(0xAA); // a stray byte is not half a block
        let p = Packet::parse(&d).unwrap();
        assert_eq!(p.sack_blocks().collect::<Vec<_>>(), vec![(5, 7), (9, 12)]);
    }

    #[test]
    fn mtu_probe_padding_is_skipped() {
        let mut d = Header { flags: FLAG_DATA, data_offset: 3, ..Default::default() }.to_bytes().to_vec();
        d.extend_from_slice(&[0, 0, 0, b'h', b'i']);
        assert_eq!(Packet::parse(&d).unwrap().payload, Some(&b"hi"[..]));
        d.truncate(HEADER_SIZE + 2);
        assert_eq!(Packet::parse(&d).unwrap().payload, None);
    }

    #[test]
    fn rejects_non_udx() {
        assert!(Packet::parse(&[0xff; 19]).is_none());
        let mut d = Header::default().to_bytes();
        d[1] = 2;
        assert!(Packet::parse(&d).is_none());
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Some(p) = Packet::parse(&bytes) {
                for (s, e) in p.sack_blocks() { let _ = (s, e); }
            }
        }

        #[test]
        fn header_round_trips(flags: u8, off: u8, id: u32, w: u32, seq: u32, ack: u32) {
            let h = Header { flags, data_offset: off, stream_id: id, recv_window: w, seq, ack };
            prop_assert_eq!(Packet::parse(&h.to_bytes()).unwrap().header, h);
        }
    }
}
