"""EmailEngine's REST API (`/v1`), a second front door beside GraphQL.

Handlers only translate: JSON bodies are parsed into pydantic models (`models.py`), turned into the same
service specs GraphQL builds, and the services' answers and coded errors into EmailEngine's JSON shapes
(`boom.py` for every error). No rule lives here that GraphQL does not share.

    routes.py      the /v1 routes (what method and path call which handler)
    endpoint.py    one route's ASGI app: token, scope, bounded body, JSON, validation, handler, errors
    boom.py        every error answer, in Hapi's Boom shape
    states.py      account states in EmailEngine's spelling
    models.py      request bodies and query strings
    accounts.py    the account handlers
    submit.py      the submit handler
    oauth2.py      the OAuth2 app handlers
    answers.py     the answers' shapes, for the document only (handlers return their dicts)
    openapi.py     `/v1/openapi.json`, built by walking the routes
    docs.py        `/v1/docs`, Swagger UI served from gql_mail/static/swagger-ui
"""
