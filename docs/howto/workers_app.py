# workers_app.py: hello.py on 4 processes sharing port 8080.
import sys

import hello
from cowboy_ws import workers

if __name__ == "__main__":
    sys.exit(workers.serve([("/", hello, None)], workers=4, host="127.0.0.1", port=8080))
