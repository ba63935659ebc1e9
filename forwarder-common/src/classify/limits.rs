//! How far the classifier reads: buffer sizes and the bounds of its loops.

/// Bytes a field may need to be carried into the next segment: the server_name extension
/// head (5 bytes) plus the longest name, or the longest HTTP header line we still look at.
pub const CARRY_MAX: usize = crate::packet::COPY_MAX;
/// Size of the kernel's working buffer: carry plus one segment's payload (a power of two,
/// so indices can be masked).
pub const BUF_SIZE: usize = 4096;
/// Largest segment payload classified; larger ones (jumbo frames, GRO in tc-only mode)
/// end the classification as unknown rather than being parsed in part.
pub const MAX_SEGMENT_PAYLOAD: usize = 2048;
/// TLS extensions looked at before giving up (browsers send about twenty).
pub const MAX_EXTENSIONS: usize = 48;
/// Fields (TLS) or header lines (HTTP) parsed per segment before giving up. In the kernel
/// each is one `bpf_loop` iteration, so this costs the verifier nothing.
pub const MAX_STEPS: usize = 64;
/// Segments a ClientHello or request may span before we give up.
pub const MAX_SEGMENTS: u8 = 4;
/// Request bytes scanned for the Host header before giving up.
pub const MAX_HTTP_HEADER_BYTES: u32 = 8192;
/// Header lines looked at before giving up.
pub const MAX_HTTP_LINES: usize = 64;
