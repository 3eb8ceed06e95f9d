"""image-worker: answers image generation jobs (`/v1/images/generations`) from OpenAI-compatible
upstreams, in the form the client asked for (`url` or `b64_json`), whatever form the upstream gives.

    python -m services.image_worker

- backend.py: `ImageBackend`, one job: the upstream call (with failover) and the conversions;
- imagetype.py: an image's type from its first bytes (what a stored object is named and served as);
- store.py: `ImageObjects`, images written to the object store the edge serves `/images/{name}` from.
"""
