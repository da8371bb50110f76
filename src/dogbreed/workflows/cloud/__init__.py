"""Cloud workflows on Amazon SageMaker with this project's images (``make hpo``, ``train-remote``, ``deploy`` ...).

    dogbreed cloud hpo --data s3://BUCKET/dogImages/ --max-jobs 8 --max-parallel-jobs 2
    dogbreed cloud best --tuning-job NAME
    dogbreed cloud train-remote --data s3://BUCKET/dogImages/ --from-tuning-job NAME [--spot]
    dogbreed cloud training-result --training-job NAME
    dogbreed cloud deploy --model dog-breed-classifier/model.tar.gz=build/.../model.tar.gz \\
        --model dog-breed-classifier-mobile/model.tar.gz=s3://BUCKET/.../model.tar.gz
    dogbreed cloud add-model --model dog-breed-classifier-resnet50/model.tar.gz=PATH
    dogbreed cloud invoke --image dog.jpg [--target T ...] [--local-port 8080]
    dogbreed cloud batch-transform --input s3://BUCKET/images/
    dogbreed cloud teardown [--delete-s3 models|all]

Settings come
from flags, else environment variables: ``--role`` (SAGEMAKER_ROLE),
``--region`` (AWS_REGION, AWS_DEFAULT_REGION), ``--bucket``
(SAGEMAKER_BUCKET; default: the SDK's bucket sagemaker-REGION-ACCOUNT),
``--prefix`` (SAGEMAKER_PREFIX), ``--endpoint`` (SAGEMAKER_ENDPOINT), image
URIs (TRAIN_IMAGE_URI, SERVE_IMAGE_URI; default: what ``make push`` pushed to
ECR, REGISTRY/dogbreed-{train,serve}:TAG), instance types
(TRAIN_INSTANCE_TYPE, SERVE_INSTANCE_TYPE, TRANSFORM_INSTANCE_TYPE) and
``--spot`` (SAGEMAKER_SPOT=true).

Everything in S3 lives under ``s3://BUCKET/PREFIX/``: ``data/``, ``tuning/``,
``training/``, ``checkpoints/``, ``models/`` (the endpoint's model data:
``models/dog-breed-classifier/model.tar.gz`` ...) and ``batch/``.

The modules, by concern: ``config`` (flags, environment fallbacks, names and
S3 layout), ``storage`` (uploads and dataset sync), ``tuning`` (``hpo``,
``best``), ``training`` (``train-remote``, ``training-result``),
``endpoint`` (``deploy``, ``add-model``, ``teardown``), ``prediction``
(``invoke``, ``batch-transform``) and ``cli`` (the parser and ``main``).
"""
