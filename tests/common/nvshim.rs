//! TEMPORARY stand-in for slirp_helper::config::nvlist until the config branch lands.
pub enum ByteOrder {
    Little,
}
pub enum Value {
    String(Vec<u8>),
    Number(u64),
}
#[derive(Default)]
pub struct Nvlist {
    pairs: Vec<(Vec<u8>, Value)>,
}
impl Nvlist {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn push(&mut self, name: impl Into<Vec<u8>>, v: Value) {
        self.pairs.push((name.into(), v));
    }
}
pub fn encode(nv: &Nvlist, _o: ByteOrder) -> Vec<u8> {
    let mut body = Vec::new();
    for (n, v) in &nv.pairs {
        let (t, data) = match v {
            Value::String(s) => {
                let mut d = s.clone();
                d.push(0);
                (4u8, d)
            }
            Value::Number(x) => (3u8, x.to_le_bytes().to_vec()),
        };
        body.push(t);
        body.extend_from_slice(&((n.len() + 1) as u16).to_le_bytes());
        body.extend_from_slice(&(data.len() as u64).to_le_bytes());
        body.extend_from_slice(&0u64.to_le_bytes());
        body.extend_from_slice(n);
        body.push(0);
        body.extend_from_slice(&data);
    }
    let mut out = vec![0x6c, 0, 0];
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    out
}
