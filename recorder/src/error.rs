/// Everything that can go wrong while recording or recovering.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Writing the file failed (disk full, I/O error). The bytes before the
    /// fragment being written are intact.
    #[error("writing the recording failed: {0}")]
    Io(#[from] std::io::Error),
    /// A box could not be encoded (a bug or an absurd sample).
    #[error("encoding MP4 boxes failed: {0}")]
    Encode(#[source] mp4_atom::Error),
    /// The file holds no usable init segment (`ftyp` + `moov`): nothing in it
    /// can be recovered.
    #[error("not a recording: {0}")]
    NotARecording(&'static str),
    /// The file is empty: the recording stopped before the first sample.
    #[error("the recording is empty")]
    Empty,
}
