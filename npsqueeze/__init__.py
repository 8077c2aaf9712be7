"""npsqueeze: SqueezeBERT (Iandola et al. 2020, arXiv 2006.11316) forward-only, in pure NumPy."""

from .config import Config, NpsqueezeError
from .modeling import (
    ARCHITECTURES,
    BertForMaskedLM,
    BertForMultipleChoice,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    ModelOutput,
    SqueezeBertForMaskedLM,
    SqueezeBertForMultipleChoice,
    SqueezeBertForQuestionAnswering,
    SqueezeBertForSequenceClassification,
    SqueezeBertForTokenClassification,
    SqueezeBertModel,
    from_pretrained,
)
from .pipelines import (FeatureExtraction, FillMask, QuestionAnswering, SentenceEmbedding, TextClassification,
                        TokenClassification, cosine_similarity, pipeline)
from .tokenizer import Tokenizer

__version__ = "0.1.0"
