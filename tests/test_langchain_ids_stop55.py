"""A Document read back with ``get_by_ids`` (its id also in ``metadata["id"]``) and added again is indexed
as it was: the copy of its id is not a metadata field, so ``filter={"id": ...}`` keeps meaning the
documents' ids for every other document."""

from __future__ import annotations

from langchain_core.documents import Document

from ragkit import Corpus
from ragkit.integrations.langchain import RagkitRetriever


def _docs() -> list[Document]:
    return [Document(page_content=f"cells number {i} alpha" if i % 2 else f"beta {i} cells",
                     metadata={"tag": "med" if i % 3 else "x"}, id=f"d{i}") for i in range(30)]


def test_a_document_read_back_and_added_again_keeps_the_id_filter():
    r = RagkitRetriever.from_documents(_docs(), pipeline="bm25", k=2)
    assert sorted(d.id for d in r.invoke("cells", filter={"id": ["d1", "d4"]})) == ["d1", "d4"]
    doc = r.get_by_ids(["d7"])[0]
    assert doc.metadata["id"] == "d7"
    doc.page_content += " Updated."
    r.delete([doc.id])
    r.add_documents([doc])
    assert sorted(d.id for d in r.invoke("cells", filter={"id": ["d1", "d4"]})) == ["d1", "d4"]
    assert all(d.metadata["id"] == d.id for d in r.invoke("cells"))


def test_an_id_copied_into_metadata_is_not_a_field_but_another_id_is():
    same = Corpus.from_documents([Document(page_content="a", metadata={"id": "x", "k": 1}, id="x")])
    assert list(same.metadata) == ["k"]
    other = Corpus.from_documents([Document(page_content="a", metadata={"id": "y"}, id="x")])
    assert list(other.ids) == ["x"] and list(other.metadata["id"]) == ["y"]
