"""What the unit and functional tests share: the CLI driven in-process, crashed runs, HTTP gets, a small
estate with addresses, the stand-in daemons, the browser and the driver contract. No test module imports from
another test module; they import from here."""
