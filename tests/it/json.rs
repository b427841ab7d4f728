//! An ordered JSON tree, independent of the code under test, for comparing what a front
//! end produced with the source event: key order, integer vs float and strings all count.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

#[derive(Debug, Clone, PartialEq)]
pub enum J {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    pub fn parse(text: &str) -> J {
        serde_json::from_str(text).expect("valid JSON")
    }

    pub fn get(&self, key: &str) -> Option<&J> {
        match self {
            J::Obj(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(J::Str(s)) => Some(s),
            _ => None,
        }
    }

    pub fn from_msgpack(v: &rmpv::Value) -> J {
        use rmpv::Value as V;
        match v {
            V::Nil => J::Null,
            V::Boolean(b) => J::Bool(*b),
            V::Integer(i) => J::Int(
                i.as_i64()
                    .map(i128::from)
                    .or(i.as_u64().map(i128::from))
                    .unwrap(),
            ),
            V::F64(f) => J::Float(*f),
            V::F32(f) => J::Float(f64::from(*f)),
            V::String(s) => J::Str(s.as_str().expect("UTF-8 string").to_string()),
            V::Array(a) => J::Arr(a.iter().map(J::from_msgpack).collect()),
            V::Map(m) => J::Obj(
                m.iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().expect("string key").to_string(),
                            J::from_msgpack(v),
                        )
                    })
                    .collect(),
            ),
            other => panic!("unexpected msgpack value {other:?}"),
        }
    }
}

impl<'de> Deserialize<'de> for J {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<J, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = J;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E>(self) -> Result<J, E> {
                Ok(J::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<J, E> {
                Ok(J::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<J, E> {
                Ok(J::Int(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<J, E> {
                Ok(J::Int(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<J, E> {
                Ok(J::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<J, E> {
                Ok(J::Str(v.into()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<J, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = s.next_element()? {
                    out.push(v);
                }
                Ok(J::Arr(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<J, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, J>()? {
                    out.push((k, v));
                }
                Ok(J::Obj(out))
            }
        }
        d.deserialize_any(V)
    }
}
