"""The Hugging Face format: the name/shape table (format), import (load) and
export (save) of BERT folders."""
