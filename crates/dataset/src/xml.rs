//! XML through quick-xml's writer, for CVAT and Pascal VOC: two-space indents, text and
//! attribute values escaped by the writer, an element's end on its own line unless it
//! holds text.

use quick_xml::Writer;
use quick_xml::events::BytesText;

pub(crate) type XmlWriter = Writer<Vec<u8>>;

/// The bytes `body` writes, ending in a newline.
pub(crate) fn document(body: impl FnOnce(&mut XmlWriter) -> std::io::Result<()>) -> Vec<u8> {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    body(&mut w).expect("writing into memory does not fail");
    let mut xml = w.into_inner();
    xml.push(b'\n');
    xml
}

/// `<name>value</name>`.
pub(crate) fn text(w: &mut XmlWriter, name: &str, value: &str) -> std::io::Result<()> {
    w.create_element(name).write_text_content(BytesText::new(value))?;
    Ok(())
}

/// `<name>`, what `inner` writes, `</name>`.
pub(crate) fn element(
    w: &mut XmlWriter,
    name: &str,
    inner: impl FnOnce(&mut XmlWriter) -> std::io::Result<()>,
) -> std::io::Result<()> {
    w.create_element(name).write_inner_content(inner)?;
    Ok(())
}
