"""python -m wsconn"""

from wsconn.cli import main

if __name__ == "__main__":
    main()
