"""gcp-storage-emulator on 127.0.0.1:PORT with bucket BUCKET, plus the two
things real GCS does on a media download that TensorStore's OCDBT format
(Orbax's checkpoints) relies on and the emulator lacks: the
`x-goog-generation` header, and 304 for `ifGenerationNotMatch` equal to the
object's generation (the manifest cache's revalidation). Without them every
Orbax save fails with "Malformed StorageGeneration".

python tests/gcs_emulator.py PORT BUCKET   (run by tests/test_cloud.py)
"""

from http import HTTPStatus
import sys
import time

from gcp_storage_emulator import server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

_download = objects.download


def download(request, response, storage, *args, **kwargs):
  try:
    obj = storage.get_file_obj(request.params['bucket_name'], request.params['object_id'])
  except NotFound:
    return _download(request, response, storage, *args, **kwargs)
  generation = str(obj.get('generation'))
  response['x-goog-generation'] = generation
  if request.query.get('ifGenerationNotMatch', [None])[0] == generation:
    response.status = HTTPStatus.NOT_MODIFIED
    return None
  return _download(request, response, storage, *args, **kwargs)


if __name__ == '__main__':
  objects.download = download   # objects.get looks it up at call time
  port, bucket = int(sys.argv[1]), sys.argv[2]
  emulator = server.create_server('127.0.0.1', port, in_memory=True, default_bucket=bucket)
  emulator.start()
  while True:
    time.sleep(1)
