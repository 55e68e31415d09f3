"""Scale out on Ray: encoding, sharded indexing and batch search (the ``ray`` extra:
``pip install 'ragkit[ray]'``, or ``pip install -e '.[ray]'`` in a ragkit checkout).

* ``pipeline.fit(corpus, backend="ray")`` pre-encodes the corpus's sentence vectors as a
  Ray Data ``map_batches`` over a pool of encoder actors (each loads the model once and
  fills its node's on-disk embedding cache), for each model of an operator whose fit
  encodes the corpus texts into sentence vectors: ``dense`` (its base model), ``knn_embed``,
  ``mmr`` and ``dbnorm``, also as a ``sharded`` retriever.  The vectors the actors return are
  written into this process's cache (the texts it lacks: on a multi-node cluster the nodes'
  caches are not this one), and the pipeline is then fitted in this process, where those
  operators read their vectors from the cache without encoding any, so the fitted pipeline
  is exactly the one a local fit gives, and saves and loads like any other.  Nothing else is
  encoded on Ray: token vectors (``muvera``, ``maxsim_exact``, ``maxsim``), a fine-tuned
  (``adapt``) model's vectors, query vectors (``cosine_adapter``), and models registered with
  :func:`~ragkit.encoders.register_encoder` (a per-process registry that Ray workers do not
  share) are encoded in this process by the local fit.  ``sharded`` retrievers with
  ``backend: auto`` are then fitted and searched on Ray.
* :class:`Sharded` splits the corpus into shards, fits one ordinary ragkit retriever per
  shard (as Ray tasks with ``backend="ray"``, one folder per shard), searches all shards for
  a query batch and merges the rankings by score with :func:`merge_rankings` (the same merge
  for any set of shards).  A shard that fails after Ray's retries raises an error naming the
  shard; a ragkit error a shard raises (a filter its documents refuse) is raised as it is.  The
  shards are served by at most one Ray actor per CPU of the cluster (several shards each when
  there are more shards than CPUs).  A loaded ``backend: ray`` index serves its own hard-linked
  copy of its shard folders (a ``ragkit-shards-*`` folder, removed with it), so a later save
  into the folder it was loaded from never reaches its actors.
* :func:`search_distributed` splits a query batch across Ray workers, each loading the
  saved pipeline once.
* Operators of your own (registered in this process: ``ragkit --import ./myops.py``,
  ``RAGKIT_IMPORT``, ``import myops``) work on Ray too: the workers import their modules (by name,
  else from the module's file, as ``--import`` does) before they rebuild the operators by name.

Bad input (an unloadable model, a registered encoder where Ray workers would need it, an operator
class no worker could import (defined in the script being run or inside a function), a
retriever that fine-tunes inside ``sharded``, a ``sharded`` inside ``sharded``, a ``workdir``
below a file, a bad ``n_chunks``, an unfitted pipeline, and what a local fit refuses at once) is
refused with a :class:`~ragkit.errors.RagkitError` before Ray starts; so is a Ray backend
without Ray installed (``ImportError``).

Works with ``ray.init()`` on one machine and with an existing cluster address
(``RAGKIT_RAY_ADDRESS`` or ``ray.init(address=...)`` before calling).  Without Ray
nothing here is imported and the local default is unchanged.
"""

from __future__ import annotations

from ragkit._distributed import search_distributed
from ragkit._merge import merge_rankings
from ragkit._ray import ShardError, ray_init
from ragkit._ray_encode import ray_encode
from ragkit._ray_fit import fit_pipeline
from ragkit._sharded import Sharded

__all__ = ["ray_init", "ray_encode", "fit_pipeline", "Sharded", "merge_rankings", "search_distributed", "ShardError"]
